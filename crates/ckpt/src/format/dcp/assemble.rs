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
    let dims = size.len();
    if dims == 0 {
        out.copy_from_slice(&data[..out.len()]);
        return;
    }
    if chunk.sizes.contains(&0) {
        return;
    }
    // Row-major strides of the global tensor, in elements.
    let mut strides = vec![1usize; dims];
    for d in (0..dims - 1).rev() {
        strides[d] = strides[d + 1] * size[d + 1];
    }
    let run = chunk.sizes[dims - 1] * element;
    // The index of the current run inside the chunk (all dims but the last).
    let mut index = vec![0usize; dims - 1];
    let mut src = 0usize;
    loop {
        let mut dst = chunk.offsets[dims - 1];
        for d in 0..dims - 1 {
            dst += (chunk.offsets[d] + index[d]) * strides[d];
        }
        let dst = dst * element;
        out[dst..dst + run].copy_from_slice(&data[src..src + run]);
        src += run;
        // Next index, last dim fastest.
        let mut d = dims - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            if index[d] < chunk.sizes[d] {
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
}
