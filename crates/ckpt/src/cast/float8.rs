//! The four 8-bit float formats torch has, decoded to and rounded from `f32` as torch's
//! `c10::Float8_*` types do: round to nearest, ties to even; what does not fit becomes
//! infinity (e5m2), the largest finite value (e4m3fn saturates, infinities too) or NaN (the
//! `fnuz` formats).

/// One 8-bit float format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Float8Format {
    /// Bits of mantissa (3 for e4m3, 2 for e5m2).
    mantissa: u32,
    /// The exponent bias.
    bias: i32,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// IEEE-like: an all-ones exponent is infinity (mantissa 0) or NaN (e5m2).
    Ieee,
    /// No infinities; the one NaN magnitude is all ones (e4m3fn: `s.1111.111`). Values
    /// beyond the largest finite one, infinities included, saturate to it.
    Finite,
    /// No infinities and no negative zero; `0x80` is the only NaN (the `fnuz` formats).
    Fnuz,
}

/// `float8_e4m3fn`: finite, max 448.
pub(crate) const E4M3FN: Float8Format = Float8Format {
    mantissa: 3,
    bias: 7,
    kind: Kind::Finite,
};
/// `float8_e5m2`: IEEE-like, max 57344.
pub(crate) const E5M2: Float8Format = Float8Format {
    mantissa: 2,
    bias: 15,
    kind: Kind::Ieee,
};
/// `float8_e4m3fnuz`: max 240.
pub(crate) const E4M3FNUZ: Float8Format = Float8Format {
    mantissa: 3,
    bias: 8,
    kind: Kind::Fnuz,
};
/// `float8_e5m2fnuz`: max 57344.
pub(crate) const E5M2FNUZ: Float8Format = Float8Format {
    mantissa: 2,
    bias: 16,
    kind: Kind::Fnuz,
};

const SIGN: u8 = 0x80;
const FNUZ_NAN: u8 = 0x80;

impl Float8Format {
    fn exponent_field_max(self) -> u32 {
        (1 << (7 - self.mantissa)) - 1
    }

    /// The largest finite magnitude's code.
    fn max_finite(self) -> u32 {
        match self.kind {
            // The all-ones exponent is reserved.
            Kind::Ieee => (self.exponent_field_max() << self.mantissa) - 1,
            // All ones is NaN.
            Kind::Finite => 0x7E,
            Kind::Fnuz => 0x7F,
        }
    }

    /// The value of `bits` (exact: every value of these formats is an `f32`).
    pub(crate) fn decode(self, bits: u8) -> f32 {
        let negative = bits & SIGN != 0;
        let magnitude = u32::from(bits & !SIGN);
        let exponent = magnitude >> self.mantissa;
        let mantissa = magnitude & ((1 << self.mantissa) - 1);
        let nan = match self.kind {
            Kind::Ieee => exponent == self.exponent_field_max() && mantissa != 0,
            Kind::Finite => magnitude == 0x7F,
            Kind::Fnuz => bits == FNUZ_NAN,
        };
        let value = if nan {
            f32::NAN
        } else if self.kind == Kind::Ieee && exponent == self.exponent_field_max() {
            f32::INFINITY
        } else if exponent == 0 {
            // Subnormal: mantissa × 2^(1 − bias − mantissa bits).
            mantissa as f32 * pow2(1 - self.bias - self.mantissa as i32)
        } else {
            (mantissa | (1 << self.mantissa)) as f32
                * pow2(exponent as i32 - self.bias - self.mantissa as i32)
        };
        if negative {
            -value
        } else {
            value
        }
    }

    /// `x` rounded to this format (nearest, ties to even), as torch rounds it.
    pub(crate) fn encode(self, x: f32) -> u8 {
        let sign = if x.is_sign_negative() { SIGN } else { 0 };
        let magnitude = x.abs();
        let nan_code = match self.kind {
            Kind::Fnuz => return self.encode_fnuz(magnitude, sign),
            Kind::Ieee => ((self.exponent_field_max() << self.mantissa) | 0x3) as u8,
            Kind::Finite => 0x7F,
        };
        if magnitude.is_nan() {
            return nan_code | sign;
        }
        let code = self.round(magnitude);
        if code > self.max_finite() {
            let overflow = match self.kind {
                Kind::Ieee => self.exponent_field_max() << self.mantissa,
                _ => self.max_finite(),
            };
            return overflow as u8 | sign;
        }
        code as u8 | sign
    }

    fn encode_fnuz(self, magnitude: f32, sign: u8) -> u8 {
        if !magnitude.is_finite() {
            return FNUZ_NAN;
        }
        match self.round(magnitude) {
            // No negative zero.
            0 => 0,
            code if code > self.max_finite() => FNUZ_NAN,
            code => code as u8 | sign,
        }
    }

    /// The code of the finite `magnitude` (≥ 0) rounded to nearest-even, possibly past the
    /// largest code (the caller decides what overflow becomes).
    fn round(self, magnitude: f32) -> u32 {
        if magnitude.is_infinite() {
            return u32::MAX;
        }
        let m = self.mantissa as i32;
        let min_normal_exponent = 1 - self.bias;
        let a = f64::from(magnitude);
        if a < f64::from(pow2(min_normal_exponent)) {
            // Subnormal (or the smallest normal, reached by rounding up: its code follows).
            return (a * f64::from(pow2(m - min_normal_exponent))).round_ties_even() as u32;
        }
        // The f32's own exponent: `magnitude` is normal here (every format's smallest
        // normal is far above f32's).
        let mut exponent = ((magnitude.to_bits() >> 23) & 0xFF) as i32 - 127;
        let mut significand = (a * pow2_f64(m - exponent)).round_ties_even() as u32;
        if significand == 1 << (m + 1) {
            significand >>= 1;
            exponent += 1;
        }
        let field = exponent + self.bias;
        if field > self.exponent_field_max() as i32 {
            return u32::MAX;
        }
        ((field as u32) << m) | (significand & ((1 << m) - 1))
    }
}

fn pow2(exponent: i32) -> f32 {
    pow2_f64(exponent) as f32
}

fn pow2_f64(exponent: i32) -> f64 {
    f64::from_bits(((exponent + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_decodes_and_encodes_back() {
        for format in [E4M3FN, E5M2, E4M3FNUZ, E5M2FNUZ] {
            for bits in 0..=255u8 {
                let value = format.decode(bits);
                if value.is_nan() {
                    assert!(format.decode(format.encode(value)).is_nan());
                } else if format.kind == Kind::Fnuz && bits == 0 {
                    assert_eq!(format.encode(value), 0);
                } else {
                    assert_eq!(format.encode(value), bits, "{format:?} {bits:#x} = {value}");
                }
            }
        }
    }

    #[test]
    fn largest_values_and_overflow_follow_torch() {
        assert_eq!(E4M3FN.decode(0x7E), 448.0);
        assert_eq!(E4M3FN.encode(464.0), 0x7E); // the tie goes to the even 448
        assert_eq!(E4M3FN.encode(470.0), 0x7E); // saturates
        assert_eq!(E4M3FN.encode(f32::NEG_INFINITY), 0xFE);
        assert_eq!(E4M3FN.encode(f32::NAN), 0x7F);
        assert_eq!(E5M2.decode(0x7B), 57344.0);
        assert_eq!(E5M2.encode(1e9), 0x7C); // infinity
        assert_eq!(E4M3FNUZ.decode(0x7F), 240.0);
        assert_eq!(E4M3FNUZ.encode(-300.0), 0x80);
        assert_eq!(E5M2FNUZ.encode(-0.0), 0);
        assert_eq!(E4M3FN.encode(-0.0), 0x80);
    }
}
