//! Where the seven classical planets are, enough for the Timing Quality Score:
//! geocentric ecliptic longitudes (of date) from JPL's "Approximate Positions
//! of the Planets" (Keplerian elements and their rates, Standish, valid
//! 1800–2050, errors of arcminutes) and the Moon from the main terms of Meeus'
//! lunar theory (about 0.1°). Signs, dignities, aspects and retrograde motion
//! need degrees, not arcseconds, so this replaces the seed's Swiss Ephemeris
//! (and its licence) for Layer 2.

/// (a AU, e, I°, L°, long. perihelion°, long. node°) at J2000 and per century.
type Elements = [[f64; 6]; 2];

const MERCURY: Elements = [
    [
        0.38709927,
        0.20563593,
        7.00497902,
        252.25032350,
        77.45779628,
        48.33076593,
    ],
    [
        0.00000037,
        0.00001906,
        -0.00594749,
        149472.67411175,
        0.16047689,
        -0.12534081,
    ],
];
const VENUS: Elements = [
    [
        0.72333566,
        0.00677672,
        3.39467605,
        181.97909950,
        131.60246718,
        76.67984255,
    ],
    [
        0.00000390,
        -0.00004107,
        -0.00078890,
        58517.81538729,
        0.00268329,
        -0.27769418,
    ],
];
const EARTH: Elements = [
    [
        1.00000261,
        0.01671123,
        -0.00001531,
        100.46457166,
        102.93768193,
        0.0,
    ],
    [
        0.00000562,
        -0.00004392,
        -0.01294668,
        35999.37244981,
        0.32327364,
        0.0,
    ],
];
const MARS: Elements = [
    [
        1.52371034,
        0.09339410,
        1.84969142,
        -4.55343205,
        -23.94362959,
        49.55953891,
    ],
    [
        0.00001847,
        0.00007882,
        -0.00813131,
        19140.30268499,
        0.44441088,
        -0.29257343,
    ],
];
const JUPITER: Elements = [
    [
        5.20288700,
        0.04838624,
        1.30439695,
        34.39644051,
        14.72847983,
        100.47390909,
    ],
    [
        -0.00011607,
        -0.00013253,
        -0.00183714,
        3034.74612775,
        0.21252668,
        0.20469106,
    ],
];
const SATURN: Elements = [
    [
        9.53667594,
        0.05386179,
        2.48599187,
        49.95424423,
        92.59887831,
        113.66242448,
    ],
    [
        -0.00125060,
        -0.00050991,
        0.00193609,
        1222.49362201,
        -0.41897216,
        -0.28867794,
    ],
];

pub const SIGNS: [&str; 12] = [
    "Aries",
    "Taurus",
    "Gemini",
    "Cancer",
    "Leo",
    "Virgo",
    "Libra",
    "Scorpio",
    "Sagittarius",
    "Capricorn",
    "Aquarius",
    "Pisces",
];

/// Julian centuries since J2000.0 of an instant (ms since the epoch).
fn centuries(t_ms: i64) -> f64 {
    (t_ms as f64 / 86_400_000.0 + 2_440_587.5 - 2_451_545.0) / 36_525.0
}

/// Heliocentric ecliptic (J2000) x, y, z in AU.
fn heliocentric(el: &Elements, t: f64) -> [f64; 3] {
    let e = |i: usize| el[0][i] + el[1][i] * t;
    let (a, ecc, inc, l, peri, node) = (e(0), e(1), e(2).to_radians(), e(3), e(4), e(5));
    let m = (l - peri).rem_euclid(360.0).to_radians();
    let mut ea = m + ecc * m.sin();
    for _ in 0..8 {
        ea -= (ea - ecc * ea.sin() - m) / (1.0 - ecc * ea.cos());
    }
    let (xp, yp) = (
        a * (ea.cos() - ecc),
        a * (1.0 - ecc * ecc).sqrt() * ea.sin(),
    );
    let w = (peri - node).to_radians();
    let o = node.to_radians();
    let (cw, sw, co, so, ci, si) = (w.cos(), w.sin(), o.cos(), o.sin(), inc.cos(), inc.sin());
    [
        (cw * co - sw * so * ci) * xp + (-sw * co - cw * so * ci) * yp,
        (cw * so + sw * co * ci) * xp + (-sw * so + cw * co * ci) * yp,
        (sw * si) * xp + (cw * si) * yp,
    ]
}

/// The Moon's geocentric ecliptic longitude of date (Meeus ch. 47, main terms).
fn moon(t: f64) -> f64 {
    let lp = 218.3164477 + 481_267.88123421 * t;
    let d = (297.8501921 + 445_267.1114034 * t).to_radians();
    let m = (357.5291092 + 35_999.0502909 * t).to_radians();
    let mp = (134.9633964 + 477_198.8675055 * t).to_radians();
    let f = (93.2720950 + 483_202.0175233 * t).to_radians();
    let terms = 6.288774 * mp.sin()
        + 1.274027 * (2.0 * d - mp).sin()
        + 0.658314 * (2.0 * d).sin()
        + 0.213618 * (2.0 * mp).sin()
        - 0.185116 * m.sin()
        - 0.114332 * (2.0 * f).sin()
        + 0.058793 * (2.0 * d - 2.0 * mp).sin()
        + 0.057066 * (2.0 * d - m - mp).sin()
        + 0.053322 * (2.0 * d + mp).sin()
        + 0.045758 * (2.0 * d - m).sin()
        - 0.040923 * (m - mp).sin()
        - 0.034720 * d.sin()
        - 0.030383 * (m + mp).sin()
        + 0.015327 * (2.0 * d - 2.0 * f).sin()
        + 0.010980 * (mp - 2.0 * f).sin()
        + 0.010675 * (4.0 * d - mp).sin();
    (lp + terms).rem_euclid(360.0)
}

/// A planet's geocentric ecliptic longitude of date, degrees [0, 360).
pub fn longitude(planet: &str, t_ms: i64) -> f64 {
    let t = centuries(t_ms);
    if planet == "Moon" {
        return moon(t);
    }
    let earth = heliocentric(&EARTH, t);
    let (x, y) = match planet {
        "Sun" => (-earth[0], -earth[1]),
        other => {
            let el = match other {
                "Mercury" => &MERCURY,
                "Venus" => &VENUS,
                "Mars" => &MARS,
                "Jupiter" => &JUPITER,
                _ => &SATURN,
            };
            let p = heliocentric(el, t);
            (p[0] - earth[0], p[1] - earth[1])
        }
    };
    // J2000 ecliptic to the ecliptic of date: general precession, 1.397° a century.
    (y.atan2(x).to_degrees() + 1.396_971 * t).rem_euclid(360.0)
}

/// Whether a planet moves backwards along the ecliptic at `t_ms` (never the Sun or Moon).
pub fn retrograde(planet: &str, t_ms: i64) -> bool {
    if matches!(planet, "Sun" | "Moon") {
        return false;
    }
    let half_day = 43_200_000;
    let step = (longitude(planet, t_ms + half_day) - longitude(planet, t_ms - half_day) + 540.0)
        .rem_euclid(360.0)
        - 180.0;
    step < 0.0
}

pub fn sign(longitude: f64) -> &'static str {
    SIGNS[(longitude.rem_euclid(360.0) / 30.0) as usize % 12]
}

/// The major aspect between two longitudes within `orb` degrees, if any.
pub fn aspect(a: f64, b: f64, orb: f64) -> Option<&'static str> {
    let sep = (a - b).rem_euclid(360.0);
    let sep = if sep > 180.0 { 360.0 - sep } else { sep };
    [
        (0.0, "conjunction"),
        (60.0, "sextile"),
        (90.0, "square"),
        (120.0, "trine"),
        (180.0, "opposition"),
    ]
    .iter()
    .find(|(angle, _)| (sep - angle).abs() <= orb)
    .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i64, m: u32, d: u32, h: i64) -> i64 {
        crate::astro::days_from_civil(y, m, d) * 86_400_000 + h * 3_600_000
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        ((a - b + 540.0).rem_euclid(360.0) - 180.0).abs() <= tol
    }

    /// Reference longitudes (of date) from PyEphem 4.2 (VSOP87 / ELP), 2024-04-10 00:00 UTC.
    #[test]
    fn longitudes_agree_with_an_ephemeris_to_a_few_arcminutes() {
        let t = ms(2024, 4, 10, 0);
        for (planet, want, tol) in [
            ("Sun", 20.622, 0.02),
            ("Moon", 37.770, 0.3),
            ("Mercury", 23.976, 0.1),
            ("Venus", 5.978, 0.1),
            ("Mars", 344.018, 0.1),
            ("Jupiter", 49.326, 0.1),
            ("Saturn", 344.594, 0.1),
        ] {
            let got = longitude(planet, t);
            assert!(close(got, want, tol), "{planet}: {got} vs {want}");
        }
        assert_eq!(sign(longitude("Sun", t)), "Aries");
    }

    /// Mercury stationed retrograde on 1 April 2024 and direct on 25 April.
    #[test]
    fn mercury_retrograde_in_april_2024() {
        assert!(!retrograde("Mercury", ms(2024, 3, 25, 0)));
        assert!(retrograde("Mercury", ms(2024, 4, 10, 0)));
        assert!(!retrograde("Mercury", ms(2024, 5, 1, 0)));
        assert!(!retrograde("Sun", ms(2024, 4, 10, 0)));
    }

    #[test]
    fn aspects_within_their_orb() {
        assert_eq!(aspect(10.0, 130.0, 6.0), Some("trine"));
        assert_eq!(aspect(357.0, 3.0, 6.0), Some("conjunction"));
        assert_eq!(aspect(0.0, 100.0, 6.0), None);
        assert_eq!(aspect(0.0, 185.0, 6.0), Some("opposition"));
    }
}
