//! Result sets and prepared statements: column definitions, text and binary rows, PREPARE_OK and
//! the parameters of COM_STMT_EXECUTE.
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

/// A parameter's wire type as the client declared it: type byte and the unsigned flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamType {
    pub ty: u8,
    pub unsigned: bool,
}

/// Decodes COM_STMT_EXECUTE's body after the statement id.
///
/// `types` holds the types bound by an earlier execute (clients send them only once) and is
/// updated when the client sends new ones. Parameters that came by COM_STMT_SEND_LONG_DATA are
/// taken from `long_data` and absent from the packet.
pub fn decode_execute_params(
    body: &[u8],
    num_params: usize,
    types: &mut Vec<ParamType>,
    long_data: &mut [Option<Vec<u8>>],
) -> Result<Vec<Value>, DecodeError> {
    let mut r = Reader::new(body);
    let _flags = r.u8("cursor flags")?;
    let _iterations = r.u32("iteration count")?;
    if num_params == 0 {
        return Ok(Vec::new());
    }
    let null_bitmap = r.bytes(num_params.div_ceil(8), "NULL bitmap")?;
    let new_bound = r.u8("new-params-bound flag")?;
    if new_bound == 1 {
        types.clear();
        for _ in 0..num_params {
            let ty = r.u8("parameter type")?;
            let flag = r.u8("parameter flag")?;
            types.push(ParamType {
                ty,
                unsigned: flag & 0x80 != 0,
            });
        }
    }
    if types.len() != num_params {
        return Err(DecodeError::Malformed(
            "parameters were never bound with types",
        ));
    }
    let mut values = Vec::with_capacity(num_params);
    for i in 0..num_params {
        if let Some(data) = long_data.get_mut(i).and_then(Option::take) {
            values.push(Value::Bytes(data));
            continue;
        }
        if null_bitmap[i / 8] & (1 << (i % 8)) != 0 {
            values.push(Value::NULL);
            continue;
        }
        values.push(decode_binary_value(&mut r, types[i])?);
    }
    Ok(values)
}

fn decode_binary_value(r: &mut Reader<'_>, t: ParamType) -> Result<Value, DecodeError> {
    const W: &str = "parameter value";
    let int = |u: u64, signed: i64| {
        if t.unsigned {
            Value::UInt(u)
        } else {
            Value::Int(signed)
        }
    };
    Ok(match t.ty {
        0x06 => Value::NULL, // MYSQL_TYPE_NULL
        0x01 => {
            let b = r.u8(W)?;
            int(u64::from(b), i64::from(b as i8))
        }
        0x02 | 0x0d => {
            let b = r.u16(W)?;
            int(u64::from(b), i64::from(b as i16))
        }
        0x03 | 0x09 => {
            let b = r.u32(W)?;
            int(u64::from(b), i64::from(b as i32))
        }
        0x08 => {
            let b = r.u64(W)?;
            int(b, b as i64)
        }
        0x04 => Value::Float(f32::from_bits(r.u32(W)?)),
        0x05 => Value::Double(f64::from_bits(r.u64(W)?)),
        0x0a | 0x0c | 0x07 | 0x0e | 0x11 | 0x12 => {
            let len = r.u8(W)?;
            let mut d = Reader::new(r.bytes(usize::from(len), W)?);
            if len == 0 {
                Value::Date(0, 0, 0, 0, 0, 0, 0)
            } else {
                let y = d.u16(W)?;
                let m = d.u8(W)?;
                let day = d.u8(W)?;
                let (h, mi, s) = if len >= 7 {
                    (d.u8(W)?, d.u8(W)?, d.u8(W)?)
                } else {
                    (0, 0, 0)
                };
                let us = if len >= 11 { d.u32(W)? } else { 0 };
                Value::Date(y, m, day, h, mi, s, us)
            }
        }
        0x0b | 0x13 => {
            let len = r.u8(W)?;
            let mut d = Reader::new(r.bytes(usize::from(len), W)?);
            if len == 0 {
                Value::Time(false, 0, 0, 0, 0, 0)
            } else {
                let neg = d.u8(W)? == 1;
                let days = d.u32(W)?;
                let (h, mi, s) = (d.u8(W)?, d.u8(W)?, d.u8(W)?);
                let us = if len >= 12 { d.u32(W)? } else { 0 };
                Value::Time(neg, days, h, mi, s, us)
            }
        }
        _ => Value::Bytes(r.lenenc_bytes(W)?.to_vec()),
    })
}

/// True when the column carries the UNSIGNED flag.
pub fn is_unsigned(c: &Column) -> bool {
    c.flags().contains(ColumnFlags::UNSIGNED_FLAG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_params_decode_with_remembered_types() {
        let mut types = Vec::new();
        let mut long = vec![None, None];
        // flags, iterations, bitmap (param 1 NULL), bound=1, types LONGLONG, VAR_STRING, value
        let mut body = vec![0, 1, 0, 0, 0, 0b10, 1, 0x08, 0, 0xfd, 0];
        body.extend_from_slice(&42i64.to_le_bytes());
        let v = decode_execute_params(&body, 2, &mut types, &mut long).expect("decode");
        assert_eq!(v, vec![Value::Int(42), Value::NULL]);
        // Second execute: types not resent.
        let mut body = vec![0, 1, 0, 0, 0, 0, 0];
        body.extend_from_slice(&7i64.to_le_bytes());
        body.extend_from_slice(&[3, b'a', b'b', b'c']);
        let v = decode_execute_params(&body, 2, &mut types, &mut long).expect("decode");
        assert_eq!(v, vec![Value::Int(7), Value::Bytes(b"abc".to_vec())]);
        // Truncated values are errors, never panics.
        for n in 0..body.len() {
            let _ = decode_execute_params(&body[..n], 2, &mut types, &mut long);
        }
        assert!(decode_execute_params(&body[..9], 2, &mut types, &mut long).is_err());
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
