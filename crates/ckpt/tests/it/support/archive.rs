//! Builders of small torch archives and pickles for the reader tests.

/// A zip archive of STORED records (no data descriptors, classic end record).
pub fn zip(records: &[(String, Vec<u8>)], method: u16) -> Vec<u8> {
    zip_with_aliases(records, &[], method)
}

/// [`zip`], where `aliases` are extra central-directory entries naming the data of
/// `records[target]` (its local header): many names for one record.
pub fn zip_with_aliases(
    records: &[(String, Vec<u8>)],
    aliases: &[(String, usize)],
    method: u16,
) -> Vec<u8> {
    let mut out = Vec::new();
    // (name, local header offset, crc, length) of each central-directory entry.
    let mut entries = Vec::new();
    for (name, data) in records {
        let offset = out.len() as u32;
        let crc = crc32fast::hash(data);
        out.extend_from_slice(&header(
            0x0403_4b50,
            None,
            name,
            method,
            crc,
            data.len() as u32,
        ));
        out.extend_from_slice(data);
        entries.push((name.clone(), offset, crc, data.len() as u32));
    }
    for (alias, target) in aliases {
        let (_, offset, crc, len) = entries[*target].clone();
        entries.push((alias.clone(), offset, crc, len));
    }
    let cd_offset = out.len() as u32;
    let mut central = Vec::new();
    for (name, offset, crc, len) in &entries {
        central.extend_from_slice(&header(
            0x0201_4b50,
            Some(*offset),
            name,
            method,
            *crc,
            *len,
        ));
    }
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let n = entries.len() as u16;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A local header (`offset` None) or a central-directory header (the local header's offset).
fn header(sig: u32, offset: Option<u32>, name: &str, method: u16, crc: u32, len: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sig.to_le_bytes());
    if offset.is_some() {
        h.extend_from_slice(&20u16.to_le_bytes());
    }
    h.extend_from_slice(&20u16.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&method.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&(name.len() as u16).to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    if let Some(offset) = offset {
        h.extend_from_slice(&[0; 10]);
        h.extend_from_slice(&offset.to_le_bytes());
    }
    h.extend_from_slice(name.as_bytes());
    h
}

pub fn torch_zip(pickle: Vec<u8>, storages: Vec<(String, Vec<u8>)>) -> Vec<u8> {
    let mut records = vec![("a/data.pkl".to_string(), pickle)];
    records.extend(
        storages
            .into_iter()
            .map(|(k, v)| (format!("a/data/{k}"), v)),
    );
    records.push(("a/version".to_string(), b"3\n".to_vec()));
    zip(&records, 0)
}

pub fn int(out: &mut Vec<u8>, v: i64) {
    if let Ok(small) = i32::try_from(v) {
        out.push(b'J');
        out.extend_from_slice(&small.to_le_bytes());
    } else {
        out.extend_from_slice(&[0x8a, 8]);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub fn text(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub fn tuple(out: &mut Vec<u8>, items: &[i64]) {
    out.push(b'(');
    for &i in items {
        int(out, i);
    }
    out.push(b't');
}

/// One float32 `_rebuild_tensor_v2` entry of a dict.
pub struct Entry<'a> {
    pub name: &'a str,
    pub key: &'a str,
    pub numel: i64,
    pub offset: i64,
    pub shape: &'a [i64],
    pub stride: &'a [i64],
}

pub fn tensor_dict_pickle(entries: &[Entry]) -> Vec<u8> {
    let mut p = b"\x80\x02}(".to_vec();
    for e in entries {
        text(&mut p, e.name);
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        text(&mut p, "storage");
        p.extend_from_slice(b"ctorch\nFloatStorage\n");
        text(&mut p, e.key);
        text(&mut p, "cpu");
        int(&mut p, e.numel);
        p.extend_from_slice(b"tQ");
        int(&mut p, e.offset);
        tuple(&mut p, e.shape);
        tuple(&mut p, e.stride);
        p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend_from_slice(b"u.");
    p
}
