//! Assembling a DCP tensor from its chunks: each chunk is a box of the global tensor
//! (offsets, sizes); the boxes must lie inside the tensor and tile it exactly (no gap, no
//! overlap), checked before any byte is read or memory allocated.

use crate::error::{Error, Result};
use crate::format::dcp::metadata::Chunk;

/// The most chunks of one tensor (the overlap check compares every pair).
const MAX_CHUNKS: usize = 1 << 14;

/// The number of elements of `shape`, or an error if it overflows.
pub(crate) fn volume(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::format(format!("a tensor of shape {shape:?} has too many elements")))
}

/// Checks that `chunks` tile a tensor of shape `size`: each inside it, no two overlapping,
/// their elements adding up to the tensor's.
pub(crate) fn check_tiling(size: &[usize], chunks: &[Chunk]) -> Result<()> {
    if chunks.len() > MAX_CHUNKS {
        return Err(Error::unsupported(format!(
            "a tensor in {} chunks (at most {MAX_CHUNKS} are read)",
            chunks.len()
        )));
    }
    let total = volume(size)?;
    let mut covered = 0usize;
    for (i, chunk) in chunks.iter().enumerate() {
        if chunk.offsets.len() != size.len() || chunk.sizes.len() != size.len() {
            return Err(Error::format(format!(
                "chunk {i} has offsets {:?} and sizes {:?} for a tensor of {} dims",
                chunk.offsets,
                chunk.sizes,
                size.len()
            )));
        }
        let inside = chunk
            .offsets
            .iter()
            .zip(&chunk.sizes)
            .zip(size)
            .all(|((&o, &s), &d)| o.checked_add(s).is_some_and(|end| end <= d));
        if !inside {
            return Err(Error::format(format!(
                "chunk {i} (offsets {:?}, sizes {:?}) reaches outside the tensor's shape {size:?}",
                chunk.offsets, chunk.sizes
            )));
        }
        covered += volume(&chunk.sizes)?;
        for (j, earlier) in chunks[..i].iter().enumerate() {
            if overlap(earlier, chunk) {
                return Err(Error::format(format!(
                    "chunks {j} (offsets {:?}, sizes {:?}) and {i} (offsets {:?}, sizes {:?}) overlap",
                    earlier.offsets, earlier.sizes, chunk.offsets, chunk.sizes
                )));
            }
        }
    }
    if covered != total {
        return Err(Error::format(format!(
            "the chunks cover {covered} of the {total} elements of a tensor of shape {size:?}: a gap"
        )));
    }
    Ok(())
}

/// Whether two non-empty boxes share an element.
fn overlap(a: &Chunk, b: &Chunk) -> bool {
    let empty = |c: &Chunk| c.sizes.contains(&0);
    !empty(a)
        && !empty(b)
        && a.offsets
            .iter()
            .zip(&a.sizes)
            .zip(b.offsets.iter().zip(&b.sizes))
            .all(|((&ao, &asz), (&bo, &bsz))| ao < bo + bsz && bo < ao + asz)
}

/// Copies the contiguous bytes of `chunk` (elements of `element` bytes) into `out`, the
/// contiguous bytes of the global tensor of shape `size`. The tiling was checked.
pub(crate) fn copy_chunk(
    out: &mut [u8],
    size: &[usize],
    chunk: &Chunk,
    data: &[u8],
    element: usize,
) {
    let _ = for_each_run(size, chunk, element, |dst, src| {
        out[dst..dst + src.len()].copy_from_slice(&data[src]);
        Ok(())
    });
}

/// Calls `run(dst, src)` for each contiguous run of `chunk` in the global tensor of shape
/// `size`: `dst` the byte offset in the tensor, `src` the bytes' range in the chunk. Runs
/// are as long as the chunk allows: a chunk spanning whole trailing dims (a row-sharded
/// tensor) is one run.
pub(crate) fn for_each_run(
    size: &[usize],
    chunk: &Chunk,
    element: usize,
    mut run: impl FnMut(usize, std::ops::Range<usize>) -> Result<()>,
) -> Result<()> {
    let dims = size.len();
    if chunk.sizes.contains(&0) {
        return Ok(());
    }
    // The first dim from which the chunk spans the tensor's whole extent in every later dim.
    let mut first = dims;
    while first > 0 && (first == dims || chunk.sizes[first] == size[first]) {
        first -= 1;
        if chunk.sizes[first] != size[first] {
            break;
        }
    }
    // Runs cover dims `first..`: the chunk's elements there are contiguous in the tensor.
    let run_elements: usize = chunk.sizes[first.min(dims)..].iter().product();
    let run_bytes = run_elements * element;
    // Row-major strides of the global tensor, in elements.
    let mut strides = vec![1usize; dims];
    for d in (0..dims.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * size[d + 1];
    }
    let outer = &chunk.sizes[..first.min(dims)];
    let mut index = vec![0usize; outer.len()];
    let mut src = 0usize;
    loop {
        let mut dst = 0usize;
        for d in 0..dims {
            let within = if d < outer.len() { index[d] } else { 0 };
            dst += (chunk.offsets[d] + within) * strides[d];
        }
        run(dst * element, src..src + run_bytes)?;
        src += run_bytes;
        // Next outer index, last dim fastest.
        let mut d = outer.len();
        loop {
            if d == 0 {
                return Ok(());
            }
            d -= 1;
            index[d] += 1;
            if index[d] < outer[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offsets: &[usize], sizes: &[usize]) -> Chunk {
        Chunk {
            offsets: offsets.to_vec(),
            sizes: sizes.to_vec(),
        }
    }

    #[test]
    fn tiling_errors_say_gap_overlap_or_outside() {
        let size = [4, 3];
        assert!(check_tiling(&size, &[chunk(&[0, 0], &[2, 3]), chunk(&[2, 0], &[2, 3])]).is_ok());
        let gap = check_tiling(&size, &[chunk(&[0, 0], &[2, 3])]).unwrap_err();
        assert!(gap.to_string().contains("a gap"), "{gap}");
        let overlap =
            check_tiling(&size, &[chunk(&[0, 0], &[3, 3]), chunk(&[2, 0], &[2, 3])]).unwrap_err();
        assert!(overlap.to_string().contains("overlap"), "{overlap}");
        let outside = check_tiling(&size, &[chunk(&[3, 0], &[2, 3])]).unwrap_err();
        assert!(outside.to_string().contains("outside"), "{outside}");
        // Same element count as the tensor, but overlapping and leaving a gap.
        let both = check_tiling(&size, &[chunk(&[0, 0], &[2, 3]), chunk(&[0, 0], &[2, 3])]);
        assert!(both.is_err());
    }

    #[test]
    fn a_column_chunk_lands_in_its_columns() {
        // A 2x3 tensor of bytes; the chunk is its last column.
        let mut out = vec![0u8; 6];
        copy_chunk(&mut out, &[2, 3], &chunk(&[0, 2], &[2, 1]), &[7, 8], 1);
        assert_eq!(out, [0, 0, 7, 0, 0, 8]);
        copy_chunk(
            &mut out,
            &[2, 3],
            &chunk(&[0, 0], &[2, 2]),
            &[1, 2, 3, 4],
            1,
        );
        assert_eq!(out, [1, 2, 7, 3, 4, 8]);
    }

    #[test]
    fn a_row_chunk_is_one_run_and_a_column_chunk_one_per_row() {
        let runs = |size: &[usize], c: &Chunk| {
            let mut runs = Vec::new();
            for_each_run(size, c, 4, |dst, src| {
                runs.push((dst, src));
                Ok(())
            })
            .unwrap();
            runs
        };
        assert_eq!(
            runs(&[4, 3, 2], &chunk(&[2, 0, 0], &[2, 3, 2])),
            [(48, 0..48)]
        );
        assert_eq!(
            runs(&[2, 3], &chunk(&[0, 1], &[2, 2])),
            [(4, 0..8), (16, 8..16)]
        );
        // Whole rows of the last dim, part of the middle one: one run per first-dim index.
        assert_eq!(
            runs(&[2, 2, 3], &chunk(&[0, 1, 0], &[2, 1, 3])),
            [(12, 0..12), (36, 12..24)]
        );
        assert_eq!(runs(&[], &chunk(&[], &[])), [(0, 0..4)]);
    }
}
