//! Result sets and prepared statements: column definitions, text and binary rows, PREPARE_OK and
//! the body of COM_STMT_EXECUTE.
//!
//! Values arrive from the backend driver as `mysql_common` values: text rows as raw bytes (relayed
//! unchanged), binary rows typed (re-encoded by the column's wire type, so widths match).

use mysql_common::constants::{ColumnFlags, ColumnType};
use mysql_common::packets::Column;
use mysql_common::proto::MySerialize;
use mysql_common::value::Value;

use super::buf::{DecodeError, Reader, put_lenenc_bytes, put_lenenc_int};

/// Appends one column definition (protocol 4.1).
pub fn encode_column(out: &mut Vec<u8>, column: &Column) {
    encode_column_with(out, column, column.name_ref(), column.flags());
}

/// A column definition under another name and with other flags (redaction clears NOT_NULL).
pub fn encode_column_with(out: &mut Vec<u8>, c: &Column, name: &[u8], flags: ColumnFlags) {
    put_lenenc_bytes(out, b"def");
    put_lenenc_bytes(out, c.schema_ref());
    put_lenenc_bytes(out, c.table_ref());
    put_lenenc_bytes(out, c.org_table_ref());
    put_lenenc_bytes(out, name);
    put_lenenc_bytes(out, c.org_name_ref());
    out.push(0x0c);
    out.extend_from_slice(&c.character_set().to_le_bytes());
    out.extend_from_slice(&c.column_length().to_le_bytes());
    out.push(c.column_type() as u8);
    out.extend_from_slice(&flags.bits().to_le_bytes());
    out.push(c.decimals());
    out.extend_from_slice(&[0, 0]);
}

/// Appends the column-count packet body.
pub fn encode_column_count(out: &mut Vec<u8>, n: usize) {
    put_lenenc_int(out, n as u64);
}

/// Appends a text-protocol row. Text values are bytes or NULL (`0xFB`).
pub fn encode_text_row(out: &mut Vec<u8>, values: &[Option<Value>]) {
    for v in values {
        match v {
            None | Some(Value::NULL) => out.push(0xFB),
            Some(Value::Bytes(b)) => put_lenenc_bytes(out, b),
            // The driver only produces bytes for text rows; format anything else as text.
            Some(other) => put_lenenc_bytes(out, other.as_sql(true).trim_matches('\'').as_bytes()),
        }
    }
}

/// Appends a binary-protocol row: header, NULL bitmap (offset 2), then each non-NULL value in
/// the width its column type requires.
pub fn encode_binary_row(out: &mut Vec<u8>, columns: &[Column], values: &[Option<Value>]) {
    out.push(0x00);
    let bitmap_at = out.len();
    let bitmap_len = (columns.len() + 7 + 2) / 8;
    out.resize(bitmap_at + bitmap_len, 0);
    for (i, (col, v)) in columns.iter().zip(values).enumerate() {
        match v {
            None | Some(Value::NULL) => {
                let bit = i + 2;
                out[bitmap_at + bit / 8] |= 1 << (bit % 8);
            }
            Some(v) => encode_binary_value(out, col.column_type(), v),
        }
    }
}

fn int_bits(v: &Value) -> u64 {
    match *v {
        Value::Int(i) => i as u64,
        Value::UInt(u) => u,
        Value::Float(f) => f as i64 as u64,
        Value::Double(d) => d as i64 as u64,
        Value::Bytes(ref b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| {
                s.parse::<i64>()
                    .ok()
                    .map(|i| i as u64)
                    .or_else(|| s.parse().ok())
            })
            .unwrap_or(0),
        _ => 0,
    }
}

fn encode_binary_value(out: &mut Vec<u8>, ty: ColumnType, v: &Value) {
    use ColumnType as T;
    match ty {
        T::MYSQL_TYPE_TINY => out.push(int_bits(v) as u8),
        T::MYSQL_TYPE_SHORT | T::MYSQL_TYPE_YEAR => {
            out.extend_from_slice(&(int_bits(v) as u16).to_le_bytes());
        }
        T::MYSQL_TYPE_LONG | T::MYSQL_TYPE_INT24 => {
            out.extend_from_slice(&(int_bits(v) as u32).to_le_bytes());
        }
        T::MYSQL_TYPE_LONGLONG => out.extend_from_slice(&int_bits(v).to_le_bytes()),
        T::MYSQL_TYPE_FLOAT => {
            let f = match *v {
                Value::Float(f) => f,
                Value::Double(d) => d as f32,
                _ => int_bits(v) as i64 as f32,
            };
            out.extend_from_slice(&f.to_le_bytes());
        }
        T::MYSQL_TYPE_DOUBLE => {
            let d = match *v {
                Value::Float(f) => f64::from(f),
                Value::Double(d) => d,
                _ => int_bits(v) as i64 as f64,
            };
            out.extend_from_slice(&d.to_le_bytes());
        }
        _ => match v {
            Value::Bytes(b) => put_lenenc_bytes(out, b),
            Value::Date(..) | Value::Time(..) => v.serialize(out),
            other => put_lenenc_bytes(out, other.as_sql(true).trim_matches('\'').as_bytes()),
        },
    }
}

/// COM_STMT_PREPARE's first reply packet.
pub fn encode_prepare_ok(out: &mut Vec<u8>, id: u32, columns: u16, params: u16, warnings: u16) {
    out.push(0x00);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&columns.to_le_bytes());
    out.extend_from_slice(&params.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&warnings.to_le_bytes());
}

/// COM_STMT_EXECUTE's body after the statement id, split where a relay needs it. The values stay
/// as the client encoded them: the backend reads them against the types the client bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecuteBody<'a> {
    /// One bit per parameter, set for NULL.
    pub null_bitmap: &'a [u8],
    /// Two bytes per parameter (type, flags) when this execute binds new types; clients send
    /// them once and the statement keeps them.
    pub new_types: Option<&'a [u8]>,
    /// The values of the parameters that are neither NULL nor sent as long data.
    pub values: &'a [u8],
}

impl<'a> ExecuteBody<'a> {
    /// Splits a body for a statement of `num_params` parameters. The cursor flags and iteration
    /// count are read and dropped: the gateway executes without cursors, once.
    pub fn decode(body: &'a [u8], num_params: usize) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let _flags = r.u8("cursor flags")?;
        let _iterations = r.u32("iteration count")?;
        if num_params == 0 {
            return Ok(Self {
                null_bitmap: &[],
                new_types: None,
                values: &[],
            });
        }
        let null_bitmap = r.bytes(num_params.div_ceil(8), "NULL bitmap")?;
        let new_types = match r.u8("new-params-bound flag")? {
            1 => Some(r.bytes(num_params * 2, "parameter types")?),
            _ => None,
        };
        Ok(Self {
            null_bitmap,
            new_types,
            values: r.rest(),
        })
    }

    /// The body a backend executes: no cursor, one iteration, `types` (the statement's latest
    /// binding, two bytes per parameter) always bound, since the backend statement may be
    /// another one than the client bound them on.
    pub fn encode(&self, out: &mut Vec<u8>, types: &[u8]) {
        out.reserve(8 + self.null_bitmap.len() + types.len() + self.values.len());
        out.push(0);
        out.extend_from_slice(&1u32.to_le_bytes());
        if types.is_empty() {
            return;
        }
        out.extend_from_slice(self.null_bitmap);
        out.push(1);
        out.extend_from_slice(types);
        out.extend_from_slice(self.values);
    }
}

/// True when the column carries the UNSIGNED flag.
pub fn is_unsigned(c: &Column) -> bool {
    c.flags().contains(ColumnFlags::UNSIGNED_FLAG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_bodies_split_and_always_bind_types() {
        // flags, iterations, bitmap (param 1 NULL), bound=1, types LONGLONG, VAR_STRING, value
        let mut body = vec![0x01, 1, 0, 0, 0, 0b10, 1, 0x08, 0, 0xfd, 0];
        body.extend_from_slice(&42i64.to_le_bytes());
        let b = ExecuteBody::decode(&body, 2).expect("decode");
        assert_eq!(b.null_bitmap, &[0b10]);
        assert_eq!(b.new_types, Some(&[0x08, 0, 0xfd, 0][..]));
        assert_eq!(b.values, &42i64.to_le_bytes());
        // A later execute without types is relayed with the remembered ones, and no cursor.
        let mut later = vec![0x01, 1, 0, 0, 0, 0, 0];
        later.extend_from_slice(&7i64.to_le_bytes());
        let b = ExecuteBody::decode(&later, 2).expect("decode");
        assert_eq!(b.new_types, None);
        let mut out = Vec::new();
        b.encode(&mut out, &[0x08, 0, 0xfd, 0]);
        let mut expected = vec![0, 1, 0, 0, 0, 0, 1, 0x08, 0, 0xfd, 0];
        expected.extend_from_slice(&7i64.to_le_bytes());
        assert_eq!(out, expected);
        // Truncated headers are errors, never panics.
        for n in 0..11 {
            assert!(ExecuteBody::decode(&body[..n], 2).is_err(), "{n}");
        }
        // No parameters: flags and iterations only.
        let mut out = Vec::new();
        ExecuteBody::decode(&[0, 1, 0, 0, 0], 0)
            .expect("decode")
            .encode(&mut out, &[]);
        assert_eq!(out, vec![0, 1, 0, 0, 0]);
    }

    #[test]
    fn binary_row_null_bitmap_has_offset_two() {
        let cols = vec![
            Column::new(ColumnType::MYSQL_TYPE_LONG),
            Column::new(ColumnType::MYSQL_TYPE_TINY),
        ];
        let mut out = Vec::new();
        encode_binary_row(&mut out, &cols, &[Some(Value::NULL), Some(Value::Int(-1))]);
        assert_eq!(out, vec![0x00, 0b100, 0xFF]);
    }
}
