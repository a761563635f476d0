//! The protobuf wire format: varints and tagged fields over a byte slice.

use super::DecodeError;

/// Wire types (the low three bits of a tag).
pub const VARINT: u8 = 0;
pub const FIXED64: u8 = 1;
pub const LEN: u8 = 2;
pub const START_GROUP: u8 = 3;
pub const END_GROUP: u8 = 4;
pub const FIXED32: u8 = 5;

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, Copy)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(&'a [u8]),
}

impl WireValue<'_> {
    pub fn wire_type(&self) -> u8 {
        match self {
            WireValue::Varint(_) => VARINT,
            WireValue::Fixed64(_) => FIXED64,
            WireValue::Fixed32(_) => FIXED32,
            WireValue::Len(_) => LEN,
        }
    }
}

/// Reads the fields of one message in order.
pub struct Reader<'a> {
    buf: &'a [u8],
    /// The message name for error messages, as upstream's generated code names it.
    message: &'a str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], message: &'a str) -> Self {
        Reader { buf, message }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(DecodeError::UnexpectedEof)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::IntOverflow)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::UnexpectedEof);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// The next field number and value, or None at the end of the message.
    pub fn field(&mut self) -> Result<Option<(u32, WireValue<'a>)>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let wire_type = (tag & 7) as u8;
        let number = tag >> 3;
        if wire_type == END_GROUP {
            return Err(DecodeError::Malformed(format!(
                "proto: {}: wiretype end group for non-group",
                self.message
            )));
        }
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(DecodeError::Malformed(format!(
                "proto: {}: illegal tag {number} (wire type {wire_type})",
                self.message
            )));
        }
        let value = match wire_type {
            VARINT => WireValue::Varint(self.varint()?),
            FIXED64 => WireValue::Fixed64(u64::from_le_bytes(self.fixed::<8>()?)),
            FIXED32 => WireValue::Fixed32(u32::from_le_bytes(self.fixed::<4>()?)),
            LEN => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| DecodeError::InvalidLength)?;
                WireValue::Len(self.take(n)?)
            }
            START_GROUP => {
                return Err(DecodeError::Malformed(format!(
                    "proto: {}: groups are not supported (field {number})",
                    self.message
                )))
            }
            _ => {
                return Err(DecodeError::Malformed(format!(
                    "proto: illegal wireType {wire_type}"
                )))
            }
        };
        Ok(Some((number as u32, value)))
    }
}

#[cfg(test)]
pub mod encode {
    //! A minimal encoder for building malformed and hand-made test inputs.

    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn bytes_field(number: u32, data: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(number) << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    pub fn varint_field(number: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(number) << 3, out);
        varint(v, out);
    }
}
