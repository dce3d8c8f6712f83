//! Every reader stays within a small constant plus a small multiple of its input in memory,
//! whatever the input says: the peak of the bytes allocated while a file is read is counted
//! by this binary's allocator and bounded. Each file here is small and hand-made so that a
//! reader that copied a shared part per reference, reserved room from the length of the
//! input, or converted a huge int to decimal would use hundreds of times the file's size (or
//! minutes of time) on it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use ckpt::format::{load_bytes, Format, LoadOptions};
use ckpt::Value;

// A binary of its own: the counting allocator must see this test's allocations only.
#[allow(dead_code)]
#[path = "it/support/archive.rs"]
mod archive;
use archive::{tensor_dict_pickle, text, zip_with_aliases, Entry};

/// Counts the bytes allocated now and their peak since [`peak_during`] reset it.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters change.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One test at a time: the counters are global, so another test building its input while
/// one measures would count in that measure. Every test holds this for its whole run.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const MIB: usize = 1 << 20;

/// `f`'s result and the most bytes allocated at once while it ran, beyond what was
/// allocated when it started.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let result = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    (result, peak)
}

/// Loads `bytes` (counted as already allocated) and returns the result and the peak.
fn load_peak(bytes: Vec<u8>, options: &LoadOptions) -> (ckpt::Result<(Format, Value)>, usize) {
    let len = bytes.len();
    let (result, peak) =
        peak_during(|| load_bytes(bytes, options).map(|loaded| (loaded.format, loaded.value)));
    // The input itself was allocated before the call (and is freed by it on an error).
    eprintln!(
        "peak {} KiB for {} KiB of input ({:.1}x)",
        peak >> 10,
        len >> 10,
        peak as f64 / len as f64
    );
    (result, peak)
}

fn bigint_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0x5a; n];
    bytes[n - 1] = 0x3c;
    bytes
}

const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";

/// A legacy (pre-1.6) torch stream of one float storage of `numel` elements under key
/// `"1"`: the dict holds the whole storage as `whole` and, for each of `views`, a tensor
/// over a storage view of it with its own view key, covering all of it.
fn legacy_stream(numel: usize, views: usize, big_endian: bool) -> Vec<u8> {
    let numel_op = |out: &mut Vec<u8>| {
        out.push(b'J');
        out.extend_from_slice(&(numel as i32).to_le_bytes());
    };
    let mut object = b"\x80\x02}(".to_vec();
    for i in 0..=views {
        let name = if i == 0 {
            "whole".to_string()
        } else {
            format!("v{i}")
        };
        text(&mut object, &name);
        object.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        text(&mut object, "storage");
        object.extend_from_slice(b"ctorch\nFloatStorage\n");
        text(&mut object, "1");
        text(&mut object, "cpu");
        numel_op(&mut object);
        if i == 0 {
            object.push(b'N');
        } else {
            object.push(b'(');
            text(&mut object, &format!("view{i}"));
            object.extend_from_slice(b"K\x00");
            numel_op(&mut object);
            object.push(b't');
        }
        object.extend_from_slice(b"tQK\x00(");
        numel_op(&mut object);
        object.extend_from_slice(b"tK\x01\x85\x89ccollections\nOrderedDict\n)RtR");
    }
    object.extend_from_slice(b"u.");
    let mut sys_info = b"\x80\x02}(".to_vec();
    text(&mut sys_info, "little_endian");
    sys_info.push(if big_endian { 0x89 } else { 0x88 });
    sys_info.extend_from_slice(b"u.");
    let mut keys = b"\x80\x02](".to_vec();
    text(&mut keys, "1");
    keys.extend_from_slice(b"e.");
    let mut out = [
        LEGACY_MAGIC,
        b"\x80\x02M\xe9\x03.",
        &sys_info,
        &object,
        &keys,
    ]
    .concat();
    out.extend_from_slice(&(numel as u64).to_le_bytes());
    let values = (0..numel).flat_map(|i| {
        let v = i as f32;
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    });
    out.extend(values);
    out
}

fn first_floats(value: &Value, name: &str, n: usize) -> Vec<f32> {
    let tensor = value.get(name).unwrap().as_tensor().unwrap();
    tensor.to_vec::<f32>().unwrap()[..n].to_vec()
}

/// A valid legacy file holds its raw storages after the pickle; the pickle reader is handed
/// the rest of the file and used to reserve room for a node per six bytes of it (13 times
/// the file: a 2 GiB file asked for 28 GB). Loading now allocates far less than the file,
/// whatever the size of its storages.
#[test]
fn a_legacy_file_allocates_nothing_in_proportion_to_its_raw_storages() {
    let _serial = serial();
    let numel = 4 * MIB; // 16 MiB of floats
    let bytes = legacy_stream(numel, 0, false);
    let len = bytes.len();
    let (result, peak) = load_peak(bytes, &LoadOptions::default());
    let (format, value) = result.unwrap();
    assert_eq!(format, Format::TorchLegacy);
    assert_eq!(first_floats(&value, "whole", 3), [0., 1., 2.]);
    assert!(peak < 2 * MIB, "peak {peak} bytes for a {len}-byte file");
}

/// A plain pickle whose bytes are mostly one large string (numpy arrays of Detectron
/// files) reserved the same 13 times its size.
#[test]
fn a_plain_pickle_allocates_nothing_in_proportion_to_its_inert_bytes() {
    let _serial = serial();
    let mut pickle = b"\x80\x04\x8e".to_vec();
    pickle.extend_from_slice(&(16 * MIB as u64).to_le_bytes());
    pickle.resize(pickle.len() + 16 * MIB, 7);
    pickle.extend_from_slice(b"0K\x05.");
    let (result, peak) = load_peak(pickle, &LoadOptions::default());
    let (format, value) = result.unwrap();
    assert_eq!(format, Format::Pickle);
    assert_eq!(value.as_int(), Some(5));
    assert!(peak < 2 * MIB, "peak {peak} bytes");
}

/// 1,000 tensors over views of one big-endian storage, each view with its own view key:
/// each view used to byte-swap its own copy of the storage (1,000 copies). The storage is
/// swapped once and the views slice that copy.
#[test]
fn views_of_a_big_endian_legacy_storage_share_one_swapped_copy() {
    let _serial = serial();
    let numel = 256 * 1024; // 1 MiB
    let bytes = legacy_stream(numel, 1000, true);
    let len = bytes.len();
    let (result, peak) = load_peak(bytes, &LoadOptions::default());
    let (_, value) = result.unwrap();
    assert_eq!(first_floats(&value, "whole", 3), [0., 1., 2.]);
    assert_eq!(first_floats(&value, "v1000", 3), [0., 1., 2.]);
    // The swapped copy (1 MiB), the tensors' metadata and the arena.
    assert!(
        peak < len + 8 * MIB,
        "peak {peak} bytes for a {len}-byte file"
    );
}

/// A big-endian torch zip whose 1,000 central-directory names all point at one storage
/// record: each name used to be byte-swapped into its own copy (and, with crc checks,
/// checked again). The bytes are checked and swapped once.
#[test]
fn names_of_one_big_endian_zip_record_share_one_swapped_copy() {
    let _serial = serial();
    let numel = 256 * 1024; // 1 MiB
    let count = 1000;
    let keys: Vec<String> = (0..count).map(|i| i.to_string()).collect();
    let shape = [numel as i64];
    let entries: Vec<Entry> = keys
        .iter()
        .map(|key| Entry {
            name: key,
            key,
            numel: numel as i64,
            offset: 0,
            shape: &shape,
            stride: &[1],
        })
        .collect();
    let data: Vec<u8> = (0..numel).flat_map(|i| (i as f32).to_be_bytes()).collect();
    let records = vec![
        ("a/data.pkl".to_string(), tensor_dict_pickle(&entries)),
        ("a/byteorder".to_string(), b"big".to_vec()),
        ("a/version".to_string(), b"3\n".to_vec()),
        ("a/data/0".to_string(), data),
    ];
    let aliases: Vec<(String, usize)> = (1..count).map(|i| (format!("a/data/{i}"), 3)).collect();
    let archive = zip_with_aliases(&records, &aliases, 0);
    let len = archive.len();
    for verify in [false, true] {
        let options = LoadOptions::default().with_verify_crc32(verify);
        let (result, peak) = load_peak(archive.clone(), &options);
        let (_, value) = result.unwrap();
        assert_eq!(first_floats(&value, "999", 3), [0., 1., 2.]);
        assert!(
            peak < len + 8 * MIB,
            "peak {peak} bytes for a {len}-byte file"
        );
    }
}

/// A pickle that pops 1 MiB of bytes and then refers to one dict of 1,000 items 9,000
/// times through the memo: the budget of values used to grow with the input's length,
/// inert bytes included, so this built 9 million values (1.65 GB) before stopping. The
/// budget now grows with the opcodes read: the reader stops after a few MiB.
#[test]
fn a_dict_shared_thousands_of_times_stops_within_a_small_budget() {
    let _serial = serial();
    let mut pickle = b"\x80\x04B".to_vec();
    pickle.extend_from_slice(&(MIB as u32).to_le_bytes());
    pickle.resize(pickle.len() + MIB, 0);
    pickle.extend_from_slice(b"0}q\x00(");
    for i in 0..1000u16 {
        pickle.push(b'M');
        pickle.extend_from_slice(&i.to_le_bytes());
        pickle.extend_from_slice(b"K\x01");
    }
    pickle.extend_from_slice(b"u0](");
    for _ in 0..9000 {
        pickle.extend_from_slice(b"h\x00");
    }
    pickle.extend_from_slice(b"e.");
    let len = pickle.len();
    let (result, peak) = load_peak(pickle, &LoadOptions::default());
    let err = result.unwrap_err().to_string();
    assert!(err.contains("values"), "{err}");
    assert!(peak < 64 * MIB, "peak {peak} bytes for a {len}-byte pickle");
}

/// Honest sharing still loads: a list of 10 ints referred to 500 times (5,500 values from
/// about 500 opcodes), or of 100 ints referred to 50 times.
#[test]
fn modest_sharing_still_loads() {
    let _serial = serial();
    for (ints, refs) in [(10u8, 500), (100, 50)] {
        let mut pickle = b"\x80\x04](".to_vec();
        for i in 0..ints {
            pickle.extend_from_slice(&[b'K', i]);
        }
        pickle.extend_from_slice(b"eq\x000](");
        for _ in 0..refs {
            pickle.extend_from_slice(b"h\x00");
        }
        pickle.extend_from_slice(b"e.");
        let (result, _) = load_peak(pickle, &LoadOptions::default());
        let (_, value) = result.unwrap();
        let Value::List(items) = value else {
            panic!("a list")
        };
        assert_eq!(items.len(), refs);
    }
}

/// A 1.9 KB pickle referring 700 times to a dict of 50 one-item dicts: the values a pickle
/// may build beyond two per opcode were a constant of 131,072, which such copies (about 220
/// bytes each) made 28 MB. The constant is now small: the reader stops within a few MB.
#[test]
fn a_tiny_pickle_sharing_a_dict_of_dicts_stays_within_a_small_constant() {
    let _serial = serial();
    let mut pickle = b"\x80\x04}q\x00(".to_vec();
    for i in 0..50u16 {
        pickle.push(b'M');
        pickle.extend_from_slice(&i.to_le_bytes());
        pickle.extend_from_slice(b"}K\x01K\x02s");
    }
    pickle.extend_from_slice(b"u0](");
    for _ in 0..700 {
        pickle.extend_from_slice(b"h\x00");
    }
    pickle.extend_from_slice(b"e.");
    let len = pickle.len();
    let (result, peak) = load_peak(pickle, &LoadOptions::default());
    let err = result.unwrap_err().to_string();
    assert!(err.contains("values"), "{err}");
    assert!(peak < 4 * MIB, "peak {peak} bytes for a {len}-byte pickle");
}

/// A 64 KiB string referred to 200 times: the string bytes a pickle may copy beyond four
/// per byte read were a constant of 8 MiB (9.6 MB for this 66 KB file); now 1 MiB.
#[test]
fn a_string_shared_hundreds_of_times_stays_within_a_small_constant() {
    let _serial = serial();
    let n = 1 << 16;
    let mut pickle = b"\x80\x04B".to_vec();
    pickle.extend_from_slice(&(n as u32).to_le_bytes());
    pickle.resize(pickle.len() + n, b'a');
    pickle.extend_from_slice(b"q\x000](");
    for _ in 0..200 {
        pickle.extend_from_slice(b"h\x00");
    }
    pickle.extend_from_slice(b"e.");
    let len = pickle.len();
    let (result, peak) = load_peak(pickle, &LoadOptions::default());
    let err = result.unwrap_err().to_string();
    assert!(err.contains("string bytes"), "{err}");
    assert!(
        peak < len + 3 * MIB,
        "peak {peak} bytes for a {len}-byte pickle"
    );
}

/// A protocol-0 `LONG` of a million digits: decimal to binary is quadratic (seconds per
/// megabyte). Python refuses ints of more than 4,300 digits; so does the reader.
#[test]
fn a_decimal_int_of_a_million_digits_is_refused_at_once() {
    let _serial = serial();
    for op in [b'L', b'I'] {
        let mut pickle = vec![b'(', b'0', op];
        pickle.resize(3 + 1_000_000, b'7');
        pickle.extend_from_slice(b"\n.");
        let (result, peak) = load_peak(pickle, &LoadOptions::default());
        let err = result.unwrap_err().to_string();
        assert!(err.contains("4300 decimal digits"), "{err}");
        assert!(peak < 4 * MIB, "peak {peak}");
    }
    // 4,300 digits still read.
    let mut pickle = b"(0L".to_vec();
    pickle.resize(3 + 4300, b'9');
    pickle.extend_from_slice(b"L\n.");
    let (result, _) = load_peak(pickle, &LoadOptions::default());
    assert!(matches!(result.unwrap().1, Value::BigInt(_)));
}

/// A 1 MiB `LONG4` used as a persistent id: the error message used to write it in decimal
/// (quadratic, ~11 s). Big ints are written as their size and leading hex digits.
#[test]
fn a_huge_int_in_an_error_message_is_written_in_bounded_form() {
    let _serial = serial();
    let n = MIB;
    let mut pickle = b"\x80\x02\x8b".to_vec();
    pickle.extend_from_slice(&(n as u32).to_le_bytes());
    pickle.extend_from_slice(&bigint_bytes(n));
    pickle.extend_from_slice(b"Q.");
    let (result, peak) = load_peak(pickle, &LoadOptions::default());
    let err = result.unwrap_err().to_string();
    assert!(err.contains("bits"), "{err}");
    assert!(err.len() < 1000, "{} bytes of error", err.len());
    assert!(peak < 8 * MIB, "peak {peak}");
}

/// The repr a listing shows (`ckpt inspect`) of a 1 MiB int: its size and leading digits.
#[test]
fn a_huge_int_reads_and_shows_in_bounded_form() {
    let _serial = serial();
    let n = MIB;
    let mut pickle = b"\x80\x02\x8b".to_vec();
    pickle.extend_from_slice(&(n as u32).to_le_bytes());
    pickle.extend_from_slice(&bigint_bytes(n));
    pickle.push(b'.');
    let (result, _) = load_peak(pickle, &LoadOptions::default());
    let value = result.unwrap().1;
    let (repr, peak) = peak_during(|| value.short_repr(80));
    assert_eq!(repr, "<int of 8388606 bits: 0x3c5a5a5a5a5a5a5a...>");
    assert!(peak < 2 * MIB, "peak {peak}");
    // Small big ints are still decimal.
    let small = b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.".to_vec();
    let value = load_peak(small, &LoadOptions::default()).0.unwrap().1;
    assert_eq!(value.short_repr(80), "18446744073709551616");
}

/// A safetensors header whose data offsets add up past 2^64: the `safetensors` crate adds
/// the last end offset to the header length unchecked (a panic with overflow checks). The
/// offsets are checked against the file first.
#[test]
fn safetensors_offsets_past_the_file_are_refused_before_the_crate_sees_them() {
    let _serial = serial();
    let size: u64 = (1 << 61) - 1;
    let mut header = String::from("{");
    for i in 0..8u64 {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"t{i}\":{{\"dtype\":\"U8\",\"shape\":[{size}],\"data_offsets\":[{},{}]}}",
            i * size,
            (i + 1) * size
        ));
    }
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&[0; 16]);
    let (result, _) = load_peak(file, &LoadOptions::default());
    let err = result.unwrap_err().to_string();
    assert!(err.contains("outside"), "{err}");
}
