//! The pickle opcodes, declared once: the reader dispatches on them, its fast path for tensor
//! records matches them, the writer emits them, and errors name them.
//!
//! Names and codes are those of Python's `pickletools`, with the protocol that introduced
//! each opcode.

/// Declares each opcode as a `u8` constant and [`name`] from the same list.
macro_rules! opcodes {
    ($($(#[doc = $doc:literal])* $name:ident = $code:expr;)*) => {
        $($(#[doc = $doc])* pub(crate) const $name: u8 = $code;)*

        /// The opcode's name, as `pickletools` prints it (`"unknown opcode"` for a byte that
        /// is none).
        pub(crate) fn name(op: u8) -> &'static str {
            match op {
                $($name => stringify!($name),)*
                _ => "unknown opcode",
            }
        }
    };
}

opcodes! {
    /// Pushes the mark that `TUPLE`, `LIST`, `DICT`, `APPENDS`, ... collect down to
    /// (protocol 0).
    MARK = b'(';
    /// Ends the pickle; its result is the top of the stack (protocol 0).
    STOP = b'.';
    /// Discards the top of the stack (protocol 0).
    POP = b'0';
    /// Discards everything down to the top mark (protocol 1).
    POP_MARK = b'1';
    /// Duplicates the top of the stack (protocol 0).
    DUP = b'2';
    /// A float as decimal text (protocol 0).
    FLOAT = b'F';
    /// An int as decimal text (`00`/`01`: `False`/`True`) (protocol 0).
    INT = b'I';
    /// A signed 4-byte int (protocol 1).
    BININT = b'J';
    /// An unsigned 1-byte int (protocol 1).
    BININT1 = b'K';
    /// An int as decimal text, optionally ending in `L` (protocol 0).
    LONG = b'L';
    /// An unsigned 2-byte int (protocol 1).
    BININT2 = b'M';
    /// `None` (protocol 0).
    NONE = b'N';
    /// A persistent id as text (protocol 0).
    PERSID = b'P';
    /// A persistent id: the top of the stack (protocol 1).
    BINPERSID = b'Q';
    /// Calls a callable with an argument tuple (protocol 0).
    REDUCE = b'R';
    /// A Python 2 `str` as a quoted `repr` (protocol 0).
    STRING = b'S';
    /// A Python 2 `str` with a 4-byte length (protocol 1).
    BINSTRING = b'T';
    /// A Python 2 `str` with a 1-byte length (protocol 1).
    SHORT_BINSTRING = b'U';
    /// A `str` as raw-unicode-escape text (protocol 0).
    UNICODE = b'V';
    /// A UTF-8 `str` with a 4-byte length (protocol 1).
    BINUNICODE = b'X';
    /// Appends to a list (protocol 0).
    APPEND = b'a';
    /// Applies a state to an object (`__setstate__`) (protocol 0).
    BUILD = b'b';
    /// A global by module and name on two text lines (protocol 0).
    GLOBAL = b'c';
    /// A dict of the key/value pairs down to the mark (protocol 0).
    DICT = b'd';
    /// An empty dict (protocol 1).
    EMPTY_DICT = b'}';
    /// Appends everything down to the mark to a list (protocol 1).
    APPENDS = b'e';
    /// Pushes a memo entry, its index as text (protocol 0).
    GET = b'g';
    /// Pushes a memo entry, a 1-byte index (protocol 1).
    BINGET = b'h';
    /// Builds an instance of a class named on two text lines (protocol 0).
    INST = b'i';
    /// Pushes a memo entry, a 4-byte index (protocol 1).
    LONG_BINGET = b'j';
    /// A list of everything down to the mark (protocol 0).
    LIST = b'l';
    /// An empty list (protocol 1).
    EMPTY_LIST = b']';
    /// Builds an instance of the class just above the mark (protocol 1).
    OBJ = b'o';
    /// Stores the top of the stack in the memo, its index as text (protocol 0).
    PUT = b'p';
    /// Stores the top of the stack in the memo, a 1-byte index (protocol 1).
    BINPUT = b'q';
    /// Stores the top of the stack in the memo, a 4-byte index (protocol 1).
    LONG_BINPUT = b'r';
    /// Sets one key of a dict (protocol 0).
    SETITEM = b's';
    /// A tuple of everything down to the mark (protocol 0).
    TUPLE = b't';
    /// An empty tuple (protocol 1).
    EMPTY_TUPLE = b')';
    /// Sets the key/value pairs down to the mark in a dict (protocol 1).
    SETITEMS = b'u';
    /// A big-endian 8-byte float (protocol 1).
    BINFLOAT = b'G';
    /// `bytes` with a 4-byte length (protocol 3).
    BINBYTES = b'B';
    /// `bytes` with a 1-byte length (protocol 3).
    SHORT_BINBYTES = b'C';
    /// The protocol number (protocol 2).
    PROTO = 0x80;
    /// `cls.__new__(cls, *args)` (protocol 2).
    NEWOBJ = 0x81;
    /// A copyreg extension code, 1 byte (protocol 2).
    EXT1 = 0x82;
    /// A copyreg extension code, 2 bytes (protocol 2).
    EXT2 = 0x83;
    /// A copyreg extension code, 4 bytes (protocol 2).
    EXT4 = 0x84;
    /// A tuple of the top object (protocol 2).
    TUPLE1 = 0x85;
    /// A tuple of the top two objects (protocol 2).
    TUPLE2 = 0x86;
    /// A tuple of the top three objects (protocol 2).
    TUPLE3 = 0x87;
    /// `True` (protocol 2).
    NEWTRUE = 0x88;
    /// `False` (protocol 2).
    NEWFALSE = 0x89;
    /// An int of up to 255 bytes, little-endian two's complement (protocol 2).
    LONG1 = 0x8A;
    /// An int with a 4-byte length, little-endian two's complement (protocol 2).
    LONG4 = 0x8B;
    /// A UTF-8 `str` with a 1-byte length (protocol 4).
    SHORT_BINUNICODE = 0x8C;
    /// A UTF-8 `str` with an 8-byte length (protocol 4).
    BINUNICODE8 = 0x8D;
    /// `bytes` with an 8-byte length (protocol 4).
    BINBYTES8 = 0x8E;
    /// An empty set (protocol 4).
    EMPTY_SET = 0x8F;
    /// Adds everything down to the mark to a set (protocol 4).
    ADDITEMS = 0x90;
    /// A frozenset of everything down to the mark (protocol 4).
    FROZENSET = 0x91;
    /// `cls.__new__(cls, *args, **kwargs)` (protocol 4).
    NEWOBJ_EX = 0x92;
    /// A global by module and name, the top two strings (protocol 4).
    STACK_GLOBAL = 0x93;
    /// Stores the top of the stack in the memo at the next index (protocol 4).
    MEMOIZE = 0x94;
    /// The length of the frame that follows (a hint for buffering) (protocol 4).
    FRAME = 0x95;
    /// A `bytearray` with an 8-byte length (protocol 5).
    BYTEARRAY8 = 0x96;
    /// An out-of-band buffer (protocol 5).
    NEXT_BUFFER = 0x97;
    /// Makes the top buffer read-only (protocol 5).
    READONLY_BUFFER = 0x98;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_has_at_most_one_name() {
        let named: Vec<u8> = (0..=255u8)
            .filter(|&b| name(b) != "unknown opcode")
            .collect();
        // Python's pickle defines 68 opcodes; the table must not have lost or doubled one.
        assert_eq!(named.len(), 68);
        assert_eq!(name(MARK), "MARK");
        assert_eq!(name(READONLY_BUFFER), "READONLY_BUFFER");
        assert_eq!(name(0xFF), "unknown opcode");
    }
}
