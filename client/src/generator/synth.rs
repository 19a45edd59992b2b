//! Synthesis of realistic records: patients, code pools with skewed frequencies, APC spells, OP
//! appointments and EC attendances, and the per-record defects that produce warnings.

use super::model::{Apc, Common, Dataset, Detail, Ec, Op, Rec};
use super::oracle::nhs_check_digit;
use super::refdata::{RefData, Year};
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// SplitMix64 step: a cheap, well-mixed hash used to derive sub-seeds and patient attributes.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed derived from several parts.
pub fn derive(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5EED_u64, |h, p| mix(h ^ mix(*p)))
}

/// A ChaCha8 generator for the given seed parts.
pub fn rng_for(parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive(parts))
}

/// Items with Zipf-like weights (rank r has weight 1/(r+1)^s), sampled by binary search.
#[derive(Debug, Clone, Default)]
pub struct Skewed {
    pub items: Vec<String>,
    cumulative: Vec<f64>,
}

impl Skewed {
    /// Shuffles `items` with `rng` (so rank is not file order) and weights them.
    pub fn new(mut items: Vec<String>, s: f64, rng: &mut ChaCha8Rng) -> Skewed {
        for i in (1..items.len()).rev() {
            let j = rng.random_range(0..=i);
            items.swap(i, j);
        }
        let mut total = 0.0;
        let cumulative = (0..items.len())
            .map(|r| {
                total += 1.0 / ((r + 1) as f64).powf(s);
                total
            })
            .collect();
        Skewed { items, cumulative }
    }

    /// One item (empty string if there are none).
    pub fn pick(&self, rng: &mut ChaCha8Rng) -> String {
        let Some(total) = self.cumulative.last() else {
            return String::new();
        };
        let u = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|c| *c < u);
        self.items[i.min(self.items.len() - 1)].clone()
    }
}

/// A patient, derived deterministically from (seed, provider, index).
#[derive(Debug, Clone)]
pub struct Patient {
    pub nhs_number: String,
    pub dob: NaiveDate,
    pub sex: &'static str,
    pub ethnic: &'static str,
    pub postcode: String,
    pub local_id: String,
    pub gp: String,
    pub commissioner: String,
}

/// A valid NHS number (Modulus 11) from random digits.
pub fn valid_nhs_number(rng: &mut impl Rng) -> String {
    loop {
        let mut d = [0u32; 9];
        d[0] = rng.random_range(4..=9);
        for x in d.iter_mut().skip(1) {
            *x = rng.random_range(0..=9);
        }
        if let Some(check) = nhs_check_digit(&d) {
            if d.iter().all(|x| *x == check) {
                continue;
            }
            let mut s: String = d.iter().map(|x| char::from(b'0' + *x as u8)).collect();
            s.push(char::from(b'0' + check as u8));
            return s;
        }
    }
}

const ETHNIC: [&str; 19] = [
    "A", "A", "A", "A", "A", "B", "C", "D", "G", "H", "J", "K", "L", "M", "N", "P", "R", "S", "Z",
];
const EC_COMPLAINTS: [&str; 10] = [
    "21522001",
    "29857009",
    "267036007",
    "62315008",
    "422587007",
    "25064002",
    "271807003",
    "91175000",
    "282145008",
    "248062006",
];
const EC_DIAGNOSES: [&str; 10] = [
    "22298006",
    "233604007",
    "125605004",
    "62315008",
    "195967001",
    "30473006",
    "13645005",
    "68566005",
    "38341003",
    "44054006",
];
const EC_DISCHARGE: [&str; 4] = ["306689006", "306706006", "1066331000000109", "183919006"];

/// Everything needed to synthesise records, built once per run.
pub struct Synth<'a> {
    pub rd: &'a RefData,
    pub seed: u64,
    diagnoses: Skewed,
    procedures: Skewed,
    op_procedures: Skewed,
    tfcs: Skewed,
    investigations: Vec<String>,
    treatments: Vec<String>,
    restricted_icd: Vec<String>,
}

impl<'a> Synth<'a> {
    /// Builds the code pools from the latest year's grouper and price tables.
    pub fn new(rd: &'a RefData, seed: u64) -> Synth<'a> {
        let mut rng = rng_for(&[seed, 0xC0DE]);
        let empty = Year::default();
        let year = rd.years.values().next_back().unwrap_or(&empty);
        let digit = |rng: &mut ChaCha8Rng| char::from(b'0' + rng.random_range(0..10u8));
        let mut procs = Vec::new();
        for prefix in year.apc_procedure_rules.keys() {
            let n = if prefix.len() >= 4 {
                1
            } else {
                2 + 2 * (4 - prefix.len())
            };
            for _ in 0..n {
                let mut c = prefix.clone();
                while c.len() < 4 {
                    c.push(digit(&mut rng));
                }
                procs.push(c);
            }
        }
        let mut op_procs: Vec<String> = Vec::new();
        for (prefix, rule) in &year.op_procedure_rules {
            if year
                .apc
                .get(&rule.hrg)
                .and_then(|t| t.op_procedure)
                .is_none()
            {
                continue;
            }
            for _ in 0..3 {
                let mut c = prefix.clone();
                while c.len() < 4 {
                    c.push(digit(&mut rng));
                }
                op_procs.push(c);
            }
        }
        let mut diags = Vec::new();
        for prefix in year.apc_diagnosis_rules.keys() {
            let n = if prefix.len() >= 4 {
                1
            } else {
                2 + 3 * (4 - prefix.len())
            };
            for _ in 0..n {
                let mut c = prefix.clone();
                while c.len() < 3 {
                    c.push(digit(&mut rng));
                }
                if c.len() < 4 {
                    if rng.random_bool(0.3) {
                        c.push('X');
                    } else {
                        c.push(digit(&mut rng));
                    }
                }
                if rng.random_bool(0.05) {
                    c.push(digit(&mut rng));
                }
                diags.push(c);
            }
        }
        let keep = |v: Vec<String>, icd: bool| -> Vec<String> {
            let mut v: Vec<String> = v
                .into_iter()
                .filter(|c| !rd.is_restricted(icd, c))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let restricted_icd = rd
            .restricted
            .iter()
            .filter(|r| r.icd10 && r.prefix.len() == 3)
            .map(|r| format!("{}0", r.prefix))
            .collect();
        let tfcs: Vec<String> = year.op.keys().cloned().collect();
        Synth {
            rd,
            seed,
            diagnoses: Skewed::new(keep(diags, true), 1.0, &mut rng),
            procedures: Skewed::new(keep(procs, false), 1.0, &mut rng),
            op_procedures: Skewed::new(keep(op_procs, false), 0.9, &mut rng),
            tfcs: Skewed::new(tfcs, 0.8, &mut rng),
            investigations: year.ec_investigations.keys().cloned().collect(),
            treatments: year.ec_treatments.keys().cloned().collect(),
            restricted_icd,
        }
    }

    /// Number of distinct diagnosis and procedure codes in the pools.
    pub fn code_counts(&self) -> (usize, usize) {
        (self.diagnoses.items.len(), self.procedures.items.len())
    }

    /// Patient `k` of provider number `p` (of `np`); practices are mostly near the provider.
    pub fn patient(&self, p: usize, np: usize, k: u64) -> Patient {
        let mut rng = rng_for(&[self.seed, 0xBEEF, p as u64, k]);
        let gps = &self.rd.gp_practices;
        let (gp, commissioner) = if gps.is_empty() {
            ("V81999".to_string(), String::new())
        } else if rng.random_bool(0.05) {
            let g = &gps[rng.random_range(0..gps.len())];
            (g.0.clone(), g.1.clone())
        } else {
            let centre = p * gps.len() / np.max(1);
            let off = rng.random_range(0..40usize.min(gps.len()));
            let g = &gps[(centre + off) % gps.len()];
            (g.0.clone(), g.1.clone())
        };
        let gp = if rng.random_bool(0.01) {
            "V81999".to_string()
        } else {
            gp
        };
        let commissioner = match self.rd.commissioners.iter().find(|c| c.0 == commissioner) {
            Some((_, icb)) if rng.random_bool(0.04) && !icb.is_empty() => icb.clone(),
            _ if commissioner.is_empty() => self
                .rd
                .commissioners
                .first()
                .map_or(String::new(), |c| c.0.clone()),
            _ => commissioner,
        };
        // Ages: a skew towards the old and the very young.
        let age_days: i64 = match rng.random_range(0..100) {
            0..8 => rng.random_range(0..(5 * 365)),
            8..25 => rng.random_range((5 * 365)..(30 * 365)),
            25..55 => rng.random_range((30 * 365)..(60 * 365)),
            _ => rng.random_range((60 * 365)..(98 * 365)),
        };
        let base = NaiveDate::from_ymd_opt(2023, 3, 31).unwrap_or(NaiveDate::MIN);
        let mut dob = base - Duration::days(age_days);
        if dob.month() == 2 && dob.day() == 29 {
            dob -= Duration::days(1);
        }
        let letters = b"ABCDEFGHJKLMNPRSTUWY";
        let l = |rng: &mut ChaCha8Rng| char::from(letters[rng.random_range(0..letters.len())]);
        let postcode = format!(
            "{}{}{} {}{}{}",
            l(&mut rng),
            l(&mut rng),
            rng.random_range(1..30),
            rng.random_range(1..10),
            l(&mut rng),
            l(&mut rng)
        );
        Patient {
            nhs_number: valid_nhs_number(&mut rng),
            dob,
            sex: match rng.random_range(0..1000) {
                0..490 => "1",
                490..995 => "2",
                995..998 => "9",
                _ => "X",
            },
            ethnic: ETHNIC[rng.random_range(0..ETHNIC.len())],
            postcode,
            local_id: format!("LP{:08}", rng.random_range(0..100_000_000u32)),
            gp,
            commissioner,
        }
    }

    fn common(&self, provider: &str, id: String, pt: &Patient, rng: &mut ChaCha8Rng) -> Common {
        let site = if provider.len() == 3 {
            format!("{provider}{:02}", rng.random_range(1..4))
        } else {
            provider.to_string()
        };
        Common {
            cds_unique_id: id,
            upsert: true,
            applicable: NaiveDateTime::default(),
            provider: provider.to_string(),
            site,
            commissioner: pt.commissioner.clone(),
            gp_practice: pt.gp.clone(),
            nhs_number: pt.nhs_number.clone(),
            nhs_number_status: "01".into(),
            local_patient_id: pt.local_id.clone(),
            date_of_birth: Some(pt.dob),
            sex: pt.sex.into(),
            ethnic_category: pt.ethnic.into(),
            postcode: pt.postcode.clone(),
        }
    }

    fn diagnosis(&self, rng: &mut ChaCha8Rng) -> String {
        if !self.restricted_icd.is_empty() && rng.random_bool(0.002) {
            return self.restricted_icd[rng.random_range(0..self.restricted_icd.len())].clone();
        }
        self.diagnoses.pick(rng)
    }

    /// `n` records of one dataset for provider number `p` in the month starting `month`. APC
    /// records come as whole spells (so the count can exceed `n` by up to three episodes).
    /// `patients` is the provider's patient pool size.
    #[allow(clippy::too_many_arguments)]
    pub fn cell(
        &self,
        dataset: Dataset,
        provider: &str,
        p: usize,
        np: usize,
        patients: u64,
        month: NaiveDate,
        month_no: u32,
        n: u64,
    ) -> Vec<Vec<Rec>> {
        let mut rng = rng_for(&[self.seed, dataset as u64, p as u64, u64::from(month_no)]);
        let days = days_in_month(month);
        let letter = match dataset {
            Dataset::Apc => 'A',
            Dataset::Op => 'O',
            Dataset::Ec => 'E',
        };
        let mut out: Vec<Vec<Rec>> = Vec::new();
        let mut produced = 0u64;
        let mut seq = 0u64;
        while produced < n {
            let u: f64 = rng.random();
            let k = ((patients as f64) * u * u) as u64;
            let pt = self.patient(p, np, k);
            let next_id = |seq: &mut u64| {
                *seq += 1;
                format!("B{provider}{letter}{month_no:02}{:07}", *seq)
            };
            match dataset {
                Dataset::Apc => {
                    let spell_no = out.len() + 1;
                    let spell = self.spell(
                        provider,
                        &pt,
                        month,
                        days,
                        month_no,
                        spell_no,
                        n - produced,
                        &mut rng,
                        &mut || next_id(&mut seq),
                    );
                    produced += spell.len() as u64;
                    out.push(spell);
                }
                Dataset::Op => {
                    let id = next_id(&mut seq);
                    let r = self.op(provider, id, &pt, month, days, &mut rng);
                    produced += 1;
                    out.push(vec![r]);
                }
                Dataset::Ec => {
                    let id = next_id(&mut seq);
                    let r = self.ec(provider, id, &pt, month, days, &mut rng);
                    produced += 1;
                    out.push(vec![r]);
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn spell(
        &self,
        provider: &str,
        pt: &Patient,
        month: NaiveDate,
        days: i64,
        month_no: u32,
        spell_no: usize,
        room: u64,
        rng: &mut ChaCha8Rng,
        next_id: &mut dyn FnMut() -> String,
    ) -> Vec<Rec> {
        let admission = month + Duration::days(rng.random_range(0..days));
        let month_end = month + Duration::days(days - 1);
        let roll: f64 = rng.random();
        // (method, class, los, episodes, procedure share)
        let (method, class, los): (&str, &str, i64) = if roll < 0.33 {
            (pick(rng, &["11", "11", "11", "12"]), "2", 0)
        } else if roll < 0.58 {
            let los = match rng.random_range(0..10) {
                0..6 => rng.random_range(1..5),
                6..9 => rng.random_range(5..11),
                _ => rng.random_range(12..46),
            };
            let class = if rng.random_bool(0.02) { "5" } else { "1" };
            (pick(rng, &["11", "11", "12", "13"]), class, los)
        } else if roll < 0.97 {
            let los = match rng.random_range(0..20) {
                0..6 => rng.random_range(0..2),
                6..17 => rng.random_range(2..13),
                _ => rng.random_range(13..71),
            };
            let m = pick(
                rng,
                &[
                    "21", "21", "21", "21", "21", "22", "23", "24", "25", "2A", "2B", "2D", "28",
                    "31", "32", "81", "82", "83",
                ],
            );
            (m, "1", los)
        } else {
            ("13", pick(rng, &["3", "3", "4"]), 0)
        };
        let procedure_share = match class {
            "2" => 1.0,
            "1" | "5" if method.starts_with('1') => 0.85,
            "3" | "4" => 0.5,
            _ => 0.3,
        };
        let max_eps = (room.clamp(1, 4)) as usize;
        let episodes = match rng.random_range(0..100) {
            _ if los < 1 || class != "1" => 1,
            0..80 => 1,
            80..93 => 2,
            93..98 => 3,
            _ => 4,
        }
        .min(max_eps);
        let unfinished = rng.random_bool(0.007);
        let discharge = admission + Duration::days(los);
        let last_start = discharge.min(month_end);
        let span = (last_start - admission).num_days();
        let mut cuts: Vec<NaiveDate> = (1..episodes)
            .map(|_| admission + Duration::days(rng.random_range(0..=span)))
            .collect();
        cuts.sort();
        let spell_id = {
            let width = 12usize.saturating_sub(provider.len() + 2);
            format!("{provider}{month_no:02}{spell_no:0width$}")
        };
        let tfc = self.tfcs.pick(rng);
        let sec_count = |rng: &mut ChaCha8Rng| -> usize {
            match rng.random_range(0..100) {
                0..40 => 0,
                40..55 => 1,
                55..70 => 2,
                70..85 => 3,
                85..95 => rng.random_range(4..8),
                _ => rng.random_range(8..13),
            }
        };
        let mut recs = Vec::with_capacity(episodes);
        for e in 0..episodes {
            let start = if e == 0 { admission } else { cuts[e - 1] };
            let is_last = e + 1 == episodes;
            let end = if is_last {
                (!unfinished).then_some(discharge)
            } else {
                Some(cuts[e])
            };
            let id = next_id();
            let c = self.common(provider, id, pt, rng);
            let nsec = sec_count(rng);
            let secondary: Vec<String> = (0..nsec).map(|_| self.diagnoses.pick(rng)).collect();
            let has_proc = rng.random_bool(procedure_share) && (e == 0 || rng.random_bool(0.3));
            let primary_procedure = if has_proc {
                self.procedures.pick(rng)
            } else {
                String::new()
            };
            let secondary_procedures: Vec<String> = if has_proc {
                (0..rng.random_range(0..3))
                    .map(|_| self.procedures.pick(rng))
                    .collect()
            } else {
                Vec::new()
            };
            let a = Apc {
                spell: spell_id.clone(),
                episode_number: e as u32 + 1,
                last_episode: is_last && !unfinished,
                admission_method: method.into(),
                admission_source: if rng.random_bool(0.9) { "19" } else { "51" }.into(),
                patient_classification: class.into(),
                discharge_method: if is_last && !unfinished {
                    if method.starts_with('2') && rng.random_bool(0.02) {
                        "4"
                    } else {
                        "1"
                    }
                } else {
                    ""
                }
                .into(),
                discharge_destination: if is_last && !unfinished { "19" } else { "" }.into(),
                admission_date: admission,
                discharge_date: if is_last && !unfinished {
                    Some(discharge)
                } else {
                    None
                },
                episode_start: start,
                episode_end: end,
                main_specialty: tfc.clone(),
                tfc: tfc.clone(),
                primary_diagnosis: self.diagnosis(rng),
                secondary_diagnoses: secondary,
                primary_procedure_date: has_proc.then_some(start),
                primary_procedure,
                secondary_procedures,
                critical_care_days: (method.starts_with('2') && rng.random_bool(0.03))
                    .then(|| rng.random_range(1..6)),
            };
            recs.push(Rec {
                common: c,
                detail: Detail::Apc(Box::new(a)),
            });
        }
        recs
    }

    fn op(
        &self,
        provider: &str,
        id: String,
        pt: &Patient,
        month: NaiveDate,
        days: i64,
        rng: &mut ChaCha8Rng,
    ) -> Rec {
        let mut date = month + Duration::days(rng.random_range(0..days));
        if date.weekday().number_from_monday() > 5 && rng.random_bool(0.8) {
            date -= Duration::days(2);
            if date < month {
                date += Duration::days(4);
            }
        }
        let c = self.common(provider, id, pt, rng);
        let attended = match rng.random_range(0..100) {
            0..82 => "5",
            82..85 => "6",
            85..92 => "3",
            92..96 => "2",
            96..99 => "4",
            _ => "7",
        };
        let first = match rng.random_range(0..100) {
            0..30 => "1",
            30..85 => "2",
            85..90 => "3",
            90..99 => "4",
            _ => "5",
        };
        let procedure = match rng.random_range(0..100) {
            0..12 => self.op_procedures.pick(rng),
            12..16 => self.procedures.pick(rng),
            _ => String::new(),
        };
        let diagnosis = if rng.random_bool(0.25) {
            self.diagnosis(rng)
        } else {
            String::new()
        };
        Rec {
            common: c,
            detail: Detail::Op(Op {
                appointment_date: date,
                attended: attended.into(),
                first_attendance: first.into(),
                consultation_mechanism: if matches!(first, "3" | "4") {
                    "11"
                } else {
                    "01"
                }
                .into(),
                tfc: self.tfcs.pick(rng),
                outcome: pick(rng, &["1", "1", "2", "3"]).into(),
                primary_procedure: procedure,
                primary_diagnosis: diagnosis,
            }),
        }
    }

    fn ec(
        &self,
        provider: &str,
        id: String,
        pt: &Patient,
        month: NaiveDate,
        days: i64,
        rng: &mut ChaCha8Rng,
    ) -> Rec {
        let day = month + Duration::days(rng.random_range(0..days));
        let hour = pick(
            rng,
            &[
                0, 1, 2, 3, 6, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                22,
            ],
        );
        let arrival = day
            .and_hms_opt(hour, rng.random_range(0..60), rng.random_range(0..60))
            .unwrap_or_default();
        let departure = arrival + Duration::minutes(rng.random_range(20..(14 * 60)));
        let dept = match rng.random_range(0..100) {
            0..68 => "01",
            68..72 => "02",
            72..92 => "03",
            92..98 => "04",
            _ => pick(rng, &["05", "06"]),
        };
        let pick_codes = |rng: &mut ChaCha8Rng, pool: &[String], max: u32| -> Vec<String> {
            let n = match rng.random_range(0..10) {
                0..3 => 0,
                3..6 => 1,
                6..8 => 2,
                _ => rng.random_range(3..=max),
            };
            let mut v: Vec<String> = (0..n)
                .filter(|_| !pool.is_empty())
                .map(|_| pool[rng.random_range(0..pool.len())].clone())
                .collect();
            if rng.random_bool(0.03) {
                v.push("999999999".into()); // unknown code: ignored by the grouper
            }
            v.sort();
            v.dedup();
            v
        };
        let investigations = pick_codes(rng, &self.investigations, 5);
        let treatments = pick_codes(rng, &self.treatments, 4);
        let c = self.common(provider, id, pt, rng);
        Rec {
            common: c,
            detail: Detail::Ec(Ec {
                arrival,
                departure: Some(departure),
                department_type: dept.into(),
                arrival_mode: pick(rng, &["1048031000000100", "1048001000000106"]).into(),
                acuity: rng.random_range(1..=5),
                chief_complaint: pick(rng, &EC_COMPLAINTS).into(),
                investigations,
                treatments,
                diagnosis: pick(rng, &EC_DIAGNOSES).into(),
                discharge_status: pick(rng, &EC_DISCHARGE).into(),
            }),
        }
    }

    /// Gives a record one per-record defect that produces a warning (`docs/rules.md` §3).
    pub fn add_defect(&self, dataset: Dataset, r: &mut Rec, rng: &mut ChaCha8Rng, bulk: bool) {
        let kinds: &[u8] = match dataset {
            Dataset::Ec => &[1, 2, 3, 4, 5, 8],
            _ => &[1, 2, 3, 4, 5, 6, 7, 8],
        };
        let kind = if bulk && dataset != Dataset::Apc && rng.random_bool(0.1) {
            9
        } else {
            kinds[rng.random_range(0..kinds.len())]
        };
        let activity = r.activity_date();
        let c = &mut r.common;
        match kind {
            1 => {
                if rng.random_bool(0.2) {
                    c.nhs_number.clear();
                } else {
                    let mut b = c.nhs_number.clone().into_bytes();
                    if let Some(last) = b.last_mut() {
                        *last = b'0' + (*last - b'0' + 1) % 10;
                    }
                    c.nhs_number = String::from_utf8(b).unwrap_or_default();
                }
            }
            2 => c.nhs_number_status = pick(rng, &["02", "03", "04", "07"]).into(),
            3 => c.date_of_birth = Some(activity + Duration::days(rng.random_range(1..400))),
            4 => c.gp_practice = format!("Z{:05}", rng.random_range(0..100_000)),
            5 => {
                if rng.random_bool(0.3) {
                    c.commissioner.clear()
                } else {
                    c.commissioner = "ZZZ99".into()
                }
            }
            6 => match &mut r.detail {
                Detail::Apc(a) => a.primary_diagnosis = "J18.9".into(),
                Detail::Op(o) => o.primary_diagnosis = "R69".into(),
                _ => {}
            },
            7 => match &mut r.detail {
                Detail::Apc(a) => a.primary_procedure = "W37.1".into(),
                Detail::Op(o) => o.primary_procedure = "I123".into(),
                _ => {}
            },
            8 => {
                // Keep the unique part after `B<provider>` so the id stays unique.
                let tail = c
                    .cds_unique_id
                    .split_off((1 + c.provider.len()).min(c.cds_unique_id.len()));
                c.cds_unique_id = format!("B{}{}{}", c.provider, c.nhs_number, tail);
            }
            _ => {
                // W09: outside the report period (the month after the activity month).
                match &mut r.detail {
                    Detail::Op(o) => o.appointment_date = next_month(activity),
                    Detail::Ec(e) => {
                        e.arrival = next_month(activity).and_time(e.arrival.time());
                        e.departure = Some(e.arrival + Duration::hours(2));
                    }
                    _ => {}
                }
            }
        }
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// First day of the month after `d`'s month.
pub fn next_month(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(d)
}

/// Days in the month starting `first`.
pub fn days_in_month(first: NaiveDate) -> i64 {
    (next_month(first) - first).num_days()
}

impl Synth<'_> {
    /// One more diagnosis for a replacement.
    pub fn extra_diagnosis(&self, rng: &mut ChaCha8Rng) -> String {
        self.diagnoses.pick(rng)
    }

    /// One more EC investigation code for a replacement.
    pub fn extra_investigation(&self, rng: &mut ChaCha8Rng) -> Option<String> {
        (!self.investigations.is_empty())
            .then(|| self.investigations[rng.random_range(0..self.investigations.len())].clone())
    }
}
