//! An allocation budget per input: the bytes live at once while one input is read may not
//! exceed `base + per_byte * input length`. The global allocator of every target counts the
//! live bytes and aborts the process (a crash libFuzzer saves) the moment a budget is
//! overrun, before the allocation is made: a small file that makes the reader allocate a
//! hundred times its size is a finding even when it stays far below the RSS limit, and a
//! huge reservation never reaches the system.
//!
//! `CKPT_FUZZ_BASE_KIB` and `CKPT_FUZZ_PER_BYTE` change the budget of a run (to look at a
//! finding with a looser one, say); with `CKPT_FUZZ_PEAKS` set every input prints its peaks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Counts live bytes and enforces [`LIMIT`].
pub struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Most live bytes allowed now (`usize::MAX` outside a budget).
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The input length and budget of the measure under way, for the message.
static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);
static ALLOWED: AtomicUsize = AtomicUsize::new(0);

fn grow(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed).saturating_add(by);
    PEAK.fetch_max(now, Ordering::Relaxed);
}

/// Aborts when `by` more bytes would overrun the budget. Runs inside the allocator, so
/// it may not allocate: the message is formatted on the stack.
fn check(by: usize) {
    let now = CURRENT.load(Ordering::Relaxed).saturating_add(by);
    if now <= LIMIT.load(Ordering::Relaxed) {
        return;
    }
    let mut message = StackText::default();
    message.push(b"ckpt-fuzz: allocation budget overrun: an allocation of ");
    message.number(by);
    message.push(b" bytes while the input of ");
    message.number(INPUT_LEN.load(Ordering::Relaxed));
    message.push(b" bytes may use ");
    message.number(ALLOWED.load(Ordering::Relaxed));
    message.push(b" bytes\n");
    let _ = std::io::stderr().write_all(message.as_bytes());
    std::process::abort();
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters change
// (and the process aborts, without unwinding, on an overrun).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            check(new_size - layout.size());
        }
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A budget: `base` bytes plus `per_byte` bytes per input byte.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Bytes allowed whatever the input.
    pub base: usize,
    /// Bytes allowed per byte of input.
    pub per_byte: usize,
}

/// What reading an input may use: 4 MiB and 32 bytes per input byte (the input itself,
/// its values and their index; the pickle reader's fixed allowance for memo copies, about
/// 3 MB at most, is in the 4 MiB). A reader that copies what it could view, or reserves from
/// a length it read, goes past it.
pub const READ: Budget = Budget {
    base: 4 << 20,
    per_byte: 32,
};

/// What using a value once read may add (formatting, walking, cloning it, writing it
/// again): the output is several times the value.
pub const USE: Budget = Budget {
    base: 16 << 20,
    per_byte: 256,
};

impl Budget {
    /// The budget, scaled by `CKPT_FUZZ_BASE_KIB` / `CKPT_FUZZ_PER_BYTE` when they are set
    /// (both scale every budget: they give `READ`'s figures).
    fn scaled(self) -> Budget {
        static SCALE: OnceLock<(Option<usize>, Option<usize>)> = OnceLock::new();
        let (base, per_byte) = *SCALE.get_or_init(|| {
            let var = |name| {
                std::env::var(name)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
            };
            (var("CKPT_FUZZ_BASE_KIB"), var("CKPT_FUZZ_PER_BYTE"))
        });
        Budget {
            base: base.map_or(self.base, |kib| {
                (kib << 10).saturating_mul(self.base / READ.base)
            }),
            per_byte: per_byte.map_or(self.per_byte, |k| {
                k.saturating_mul(self.per_byte / READ.per_byte)
            }),
        }
    }

    /// Runs `f` for an input of `input_len` bytes; the process aborts if the bytes live at
    /// once while it runs, beyond those live when it starts, overrun the budget.
    /// Returns `f`'s result and the peak it reached.
    pub fn run<T>(self, input_len: usize, f: impl FnOnce() -> T) -> (T, usize) {
        let budget = self.scaled();
        let allowed = budget
            .base
            .saturating_add(budget.per_byte.saturating_mul(input_len));
        let start = CURRENT.load(Ordering::Relaxed);
        let outer = LIMIT.load(Ordering::Relaxed);
        let outer_allowed = ALLOWED.swap(allowed, Ordering::Relaxed);
        let outer_len = INPUT_LEN.swap(input_len, Ordering::Relaxed);
        let outer_peak = PEAK.swap(start, Ordering::Relaxed);
        LIMIT.store(start.saturating_add(allowed).min(outer), Ordering::Relaxed);
        let result = f();
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(start);
        if report_peaks() {
            eprintln!(
                "ckpt-fuzz: peak {peak} bytes for {input_len} bytes of input (budget {allowed})"
            );
        }
        LIMIT.store(outer, Ordering::Relaxed);
        ALLOWED.store(outer_allowed, Ordering::Relaxed);
        INPUT_LEN.store(outer_len, Ordering::Relaxed);
        PEAK.fetch_max(outer_peak, Ordering::Relaxed);
        (result, peak)
    }
}

/// Whether `CKPT_FUZZ_PEAKS` is set: every measure prints its peak (to choose a budget).
fn report_peaks() -> bool {
    static REPORT: OnceLock<bool> = OnceLock::new();
    *REPORT.get_or_init(|| std::env::var_os("CKPT_FUZZ_PEAKS").is_some())
}

/// A short text built without allocating.
struct StackText {
    bytes: [u8; 256],
    len: usize,
}

impl Default for StackText {
    fn default() -> StackText {
        StackText {
            bytes: [0; 256],
            len: 0,
        }
    }
}

impl StackText {
    fn push(&mut self, text: &[u8]) {
        for &b in text {
            if self.len < self.bytes.len() {
                self.bytes[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn number(&mut self, mut n: usize) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let text = digits;
        self.push(&text[i..]);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}
