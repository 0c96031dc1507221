//! PostgreSQL's binary `numeric` both ways. The guest sees a numeric as its
//! exact decimal text; on the wire it is base-10000 digit groups with a weight,
//! a sign and a display scale, so neither direction may go through a float.

use std::fmt::Write as _;

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// Decimal text ("-12.50", "NaN", "Infinity") to PostgreSQL's binary numeric:
/// base-10000 digit groups, a weight, a sign and the display scale.
pub fn numeric_to_binary(text: &str) -> Result<Vec<u8>, String> {
    let header = |ndigits: u16, weight: i16, sign: u16, dscale: u16| {
        let mut out = Vec::with_capacity(8);
        out.extend_from_slice(&ndigits.to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        out
    };
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" => return Ok(header(0, 0, NUMERIC_NAN, 0)),
        "infinity" | "+infinity" => return Ok(header(0, 0, NUMERIC_PINF, 0)),
        "-infinity" => return Ok(header(0, 0, NUMERIC_NINF, 0)),
        _ => {}
    }
    let bad = || format!("{text:?} is not a decimal number");
    let (negative, unsigned) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
        || frac_part.len() > 16383
    {
        return Err(bad());
    }
    let int_part = int_part.trim_start_matches('0');
    // Pad the integer part on the left and the fraction on the right to whole groups.
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let digits: String = "0".repeat(int_pad) + int_part + frac_part + &"0".repeat(frac_pad);
    let mut groups: Vec<i16> = digits
        .as_bytes()
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0')))
        .collect();
    let mut weight = ((int_pad + int_part.len()) / 4) as i32 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    if groups.len() > u16::MAX as usize || !(-(i16::MAX as i32)..=i16::MAX as i32).contains(&weight)
    {
        return Err(bad());
    }
    let sign = if negative && !groups.is_empty() {
        NUMERIC_NEG
    } else {
        0
    };
    let mut out = header(
        groups.len() as u16,
        weight as i16,
        sign,
        frac_part.len() as u16,
    );
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

/// PostgreSQL's binary numeric back to its exact decimal text.
pub fn numeric_from_binary(b: &[u8]) -> Result<String, String> {
    let bad = || "malformed numeric".to_string();
    let u16_at = |i: usize| {
        b.get(i..i + 2)
            .map(|s| u16::from_be_bytes([s[0], s[1]]))
            .ok_or_else(bad)
    };
    let ndigits = u16_at(0)? as usize;
    let weight = u16_at(2)? as i16 as i32;
    let sign = u16_at(4)?;
    let dscale = u16_at(6)? as usize;
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits = (0..ndigits)
        .map(|i| u16_at(8 + 2 * i))
        .collect::<Result<Vec<_>, _>>()?;
    let digit = |i: i32| {
        if i >= 0 {
            digits.get(i as usize).copied().unwrap_or(0)
        } else {
            0
        }
    };
    let mut s = String::new();
    if sign == NUMERIC_NEG {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                let _ = write!(s, "{}", digit(i));
            } else {
                let _ = write!(s, "{:04}", digit(i));
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let start = s.len();
        let mut i = weight + 1;
        while s.len() - start < dscale {
            let _ = write!(s, "{:04}", digit(i));
            i += 1;
        }
        s.truncate(start + dscale);
    }
    Ok(s)
}
