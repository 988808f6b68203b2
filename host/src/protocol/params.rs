//! COM_STMT_EXECUTE's parameter values decoded against their bound types, as plain values (for
//! the capture file and the replay that sends them again). The relay itself never decodes them:
//! it forwards the client's bytes.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::buf::{DecodeError, Reader};

/// One parameter's value (`None` in a list: NULL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamValue {
    Int(i64),
    Uint(u64),
    Double(f64),
    /// UTF-8 text (strings, decimals, JSON, enums).
    Text(String),
    /// Bytes that are not UTF-8, as hex.
    Hex(String),
    /// DATE, DATETIME, TIMESTAMP: `YYYY-MM-DD[ hh:mm:ss[.ffffff]]`.
    Date(String),
    /// TIME: `[-]D hh:mm:ss[.ffffff]` (days, then the time of day).
    Time(String),
}

const TINY: u8 = 1;
const SHORT: u8 = 2;
const LONG: u8 = 3;
const FLOAT: u8 = 4;
const DOUBLE: u8 = 5;
const TIMESTAMP: u8 = 7;
const LONGLONG: u8 = 8;
const INT24: u8 = 9;
const DATE: u8 = 10;
const TIME: u8 = 11;
const DATETIME: u8 = 12;
const YEAR: u8 = 13;
const UNSIGNED: u8 = 0x80;

/// The values of `count` parameters bound with `types` (two bytes each: type, flags), NULLs by
/// `null_bitmap`, from `values`; a parameter sent as long data takes its bytes from `long_data`.
pub fn decode(
    count: usize,
    null_bitmap: &[u8],
    types: &[u8],
    values: &[u8],
    long_data: &[(u16, &[u8])],
) -> Result<Vec<Option<ParamValue>>, DecodeError> {
    let mut r = Reader::new(values);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let null = null_bitmap
            .get(i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0);
        let long = long_data.iter().find(|(p, _)| usize::from(*p) == i);
        if null && long.is_none() {
            out.push(None);
            continue;
        }
        if let Some((_, bytes)) = long {
            out.push(Some(bytes_value(bytes)));
            continue;
        }
        let ty = *types
            .get(2 * i)
            .ok_or(DecodeError::Malformed("parameter types"))?;
        let unsigned = types.get(2 * i + 1).is_some_and(|f| f & UNSIGNED != 0);
        out.push(Some(value(&mut r, ty, unsigned)?));
    }
    Ok(out)
}

fn value(r: &mut Reader<'_>, ty: u8, unsigned: bool) -> Result<ParamValue, DecodeError> {
    let int = |v: i64, u: u64| {
        if unsigned {
            ParamValue::Uint(u)
        } else {
            ParamValue::Int(v)
        }
    };
    Ok(match ty {
        TINY => {
            let b = r.u8("TINY parameter")?;
            int(i64::from(b as i8), u64::from(b))
        }
        SHORT | YEAR => {
            let v = r.u16("SHORT parameter")?;
            int(i64::from(v as i16), u64::from(v))
        }
        LONG | INT24 => {
            let v = r.u32("LONG parameter")?;
            int(i64::from(v as i32), u64::from(v))
        }
        LONGLONG => {
            let v = r.u64("LONGLONG parameter")?;
            int(v as i64, v)
        }
        FLOAT => {
            let b = r.bytes(4, "FLOAT parameter")?;
            ParamValue::Double(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        }
        DOUBLE => {
            let b = r.bytes(8, "DOUBLE parameter")?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            ParamValue::Double(f64::from_le_bytes(a))
        }
        DATE | DATETIME | TIMESTAMP => ParamValue::Date(date(r)?),
        TIME => ParamValue::Time(time(r)?),
        // Strings, blobs, decimals, JSON, bits, enums, sets, geometry: length-encoded bytes.
        _ => bytes_value(r.lenenc_bytes("parameter value")?),
    })
}

fn bytes_value(b: &[u8]) -> ParamValue {
    match std::str::from_utf8(b) {
        Ok(s) => ParamValue::Text(s.to_string()),
        Err(_) => ParamValue::Hex(
            b.iter()
                .fold(String::with_capacity(2 * b.len()), |mut s, x| {
                    let _ = write!(s, "{x:02x}");
                    s
                }),
        ),
    }
}

fn date(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let len = r.u8("date length")?;
    let b = r.bytes(usize::from(len), "date")?;
    let y = b.get(..2).map_or(0, |y| u16::from_le_bytes([y[0], y[1]]));
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut s = format!("{y:04}-{:02}-{:02}", at(2), at(3));
    if len >= 7 {
        let _ = write!(s, " {:02}:{:02}:{:02}", at(4), at(5), at(6));
    }
    if len >= 11 {
        let us = u32::from_le_bytes([at(7), at(8), at(9), at(10)]);
        let _ = write!(s, ".{us:06}");
    }
    Ok(s)
}

fn time(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let len = r.u8("time length")?;
    let b = r.bytes(usize::from(len), "time")?;
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    if len == 0 {
        return Ok("0 00:00:00".into());
    }
    let days = u32::from_le_bytes([at(1), at(2), at(3), at(4)]);
    let sign = if at(0) == 1 { "-" } else { "" };
    let mut s = format!("{sign}{days} {:02}:{:02}:{:02}", at(5), at(6), at(7));
    if len >= 12 {
        let us = u32::from_le_bytes([at(8), at(9), at(10), at(11)]);
        let _ = write!(s, ".{us:06}");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_by_their_bound_types_with_nulls_and_long_data() {
        // (NULL, -2 TINY, 7 unsigned LONGLONG, 1.5 DOUBLE, 'hé' VAR_STRING, long data, DATETIME)
        let types = [
            6, 0, TINY, 0, LONGLONG, UNSIGNED, DOUBLE, 0, 253, 0, 252, 0, DATETIME, 0,
        ];
        let mut values = vec![0xfe];
        values.extend_from_slice(&7u64.to_le_bytes());
        values.extend_from_slice(&1.5f64.to_le_bytes());
        values.extend_from_slice(&[3, b'h', 0xc3, 0xa9]);
        values.extend_from_slice(&[7, 0xe8, 0x07, 2, 29, 13, 14, 15]);
        let long: &[u8] = &[0xff, 0x00];
        let got = decode(7, &[0b0000_0001], &types, &values, &[(5, long)]).expect("decodes");
        assert_eq!(
            got,
            vec![
                None,
                Some(ParamValue::Int(-2)),
                Some(ParamValue::Uint(7)),
                Some(ParamValue::Double(1.5)),
                Some(ParamValue::Text("hé".into())),
                Some(ParamValue::Hex("ff00".into())),
                Some(ParamValue::Date("2024-02-29 13:14:15".into())),
            ]
        );
        let e = decode(1, &[0], &[LONG, 0], &[1, 2], &[]).expect_err("truncated");
        assert!(e.to_string().contains("LONG"), "{e}");
    }
}
