//! Small reference tables and record builders shared by the domain-core tests.
//!
//! The tables are literal CSV text so that each test's expected pence can be worked out by hand from
//! what is written here. Two tariff years are present, `2023-24` and `2024-25`, with different
//! prices so that the choice of year is visible in a price.
//!
//! Providers: `RRV` (MFF 1.045678 in 2024-25, 1.040000 in 2023-24), `RX1` (MFF 1.000005: products
//! that end in exactly half a penny), `8HA03` (not on the MFF sheet: 1.000000). Sender `X26` is a
//! submitting agency registered for `RRV`.

use super::RefData;
use crate::model::{
    ApcItems, Common, Dataset, Detail, EcItems, OpItems, Protocol, Record, SubmissionMeta,
    UpdateType,
};
use chrono::{NaiveDate, NaiveDateTime};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const PROVIDERS: &str = "\
org_code,org_name,org_type
RRV,University College London Hospitals,NHS trust
RX1,Nottingham University Hospitals,NHS trust
8HA03,Example Independent Hospital,Independent
";

pub const COMMISSIONERS: &str = "\
org_code,org_name,icb_code
D4U1Y,Sub-ICB location A,QMJ
15E,Sub-ICB location B,QHL
";

pub const GP_PRACTICES: &str = "\
org_code,org_name,commissioner_code
A81001,Practice one,D4U1Y
B82002,Practice two,15E
";

pub const SENDERS: &str = "\
sender_code,provider_code
X26,RRV
";

pub const RESTRICTED: &str = "\
code_type,code_prefix,list
ICD10,N97,FERTILISATION
OPCS4,Q13,FERTILISATION
ICD10,F64,GENDER_RECOGNITION
";

/// Same rules in both years. Longest prefix: `W371` matches `W37` (split), `W3`, and `W`.
pub const HRG_GROUPER: &str = "\
setting,code_type,code_prefix,hrg,cc_split
APC,OPCS4,W37,HN12,Y
APC,OPCS4,W3,HN20Z,N
APC,OPCS4,W,HN99Z,N
APC,OPCS4,Q13,MC10Z,N
APC,ICD10,I21,EB10,Y
APC,ICD10,I2,EB20Z,N
APC,ICD10,I,EB99Z,N
APC,ICD10,R07,EB30Z,N
APC,ICD10,N97,MC10Z,N
APC,ICD10,Z,WD99Z,N
OP,OPCS4,Q55,MA01Z,N
OP,OPCS4,W90,HN30Z,N
";

/// 2024-25 "APC & OPROC". Columns: HRG, name, OP procedure, combined, DC, EL, EL trim, NEL,
/// NEL trim, per day, SSEM applicable, SSEM %, SSEM price. `WD99Z` has no row at all.
pub const APC_PRICES_2024: &str = "\
HRG code,HRG name,Outpatient procedure tariff (£),Combined day case / ordinary elective spell tariff (£),Day case spell tariff (£),Ordinary elective spell tariff (£),Ordinary elective long stay trim point (days),Non-elective spell tariff (£),Non-elective long stay trim point (days),Per day long stay payment (for days exceeding trim point) (£),Reduced short stay emergency tariff _applicable?,% applied in calculation of reduced short stay emergency tariff,Reduced short stay emergency tariff (£)
HN12A,Hip with CC 3+,,\"£8,000\",,\"7,500.00\",5,\"9,000\",10,350.50,No,,
HN12B,Hip with CC 1-2,,\"6,000\",-,-,4,\"7,000\",8,300,No,,
HN12C,Hip without CC,,\"5,000\",\"4,000\",\"5,500\",3,\"6,000\",6,250,Yes,25%,\"1,500\"
HN20Z,Other hip,,\"3,000\",\"2,000\",,2,\"3,500\",4,200,Yes,30%,
HN99Z,Other musculoskeletal,,\"1,000\",900,\"1,100\",2,\"1,200\",,,No,,
EB10A,Heart attack with CC 3+,,,,,,\"4,500.50\",12,275.25,Yes,40%,\"1,234.56\"
EB10B,Heart attack with CC 1-2,,,,,,\"3,600.00\",10,260,Yes,40%,\"1,100.00\"
EB10C,Heart attack without CC,,,,,,\"2,800\",8,240,Yes,40%,950
EB20Z,Other ischaemic heart,,\"1,500\",\"1,400\",\"1,600\",3,\"2,000\",5,180,No,,800
EB99Z,Other circulatory,,,,,,\"1,000.01\",0,100,Yes,50%,500.01
EB30Z,Chest pain,,700,,,,-,,,No,,
MC10Z,Assisted fertilisation,,\"2,200\",\"2,100\",\"2,300\",2,\"2,400\",3,150,No,,
MA01Z,Minor skin procedure,150,,,,,,,,No,,
HN30Z,Joint injection,,600,,,,,,,No,,
";

/// 2023-24 "APC & OPROC": fewer rows, lower prices.
pub const APC_PRICES_2023: &str = "\
HRG code,Outpatient procedure tariff (£),Combined day case / ordinary elective spell tariff (£),Day case spell tariff (£),Ordinary elective spell tariff (£),Ordinary elective long stay trim point (days),Non-elective spell tariff (£),Non-elective long stay trim point (days),Per day long stay payment (for days exceeding trim point) (£),Reduced short stay emergency tariff _applicable?,Reduced short stay emergency tariff (£)
HN12C,,\"4,800\",\"3,900\",\"5,000\",3,\"5,900\",6,240,Yes,\"1,400\"
HN99Z,,950,850,\"1,050\",2,\"1,150\",,,No,
MA01Z,140,,,,,,,,No,
";

pub const OP_PRICES_2024: &str = "\
Treatment function code,Treatment function name,First attendance - single professional (£),First attendance - multi-professional (£),Follow-up attendance - single professional (£),Follow-up attendance - multi-professional (£)
110,Trauma and orthopaedics,£180.00,£220,£95.50,£120
100,General surgery,160,190,-,90
";

pub const OP_PRICES_2023: &str = "\
Treatment function code,First attendance - single professional (£),Follow-up attendance - single professional (£)
110,170,90
";

pub const EC_PRICES: &str = "\
HRG code,HRG name,Type 1 and 2 departments (£),Type 3 and 4 departments (£)
VB01Z,Category 3 investigation with category 4 treatment,£450.00,£150.00
VB02Z,,400,140
VB03Z,,350,130
VB04Z,,300,120
VB05Z,,250,110
VB06Z,,200,100
VB07Z,,180,90
VB08Z,,160,80
VB09Z,,140,70
VB10Z,,120.50,60.25
VB11Z,No investigation with no significant treatment,100,-
";

/// Investigation categories 1-3 and treatment categories 1-4.
pub const EC_GROUPER: &str = "\
snomed_code,kind,category
1001,investigation,1
1002,investigation,2
1003,investigation,3
2001,treatment,1
2002,treatment,2
2003,treatment,3
2004,treatment,4
";

/// HRG = VB(11 - (2 × investigation + treatment)), written out.
pub const EC_HRG: &str = "\
investigation_category,treatment_category,hrg
0,0,VB11Z
0,1,VB10Z
0,2,VB09Z
0,3,VB08Z
0,4,VB07Z
1,0,VB09Z
1,1,VB08Z
1,2,VB07Z
1,3,VB06Z
1,4,VB05Z
2,0,VB07Z
2,1,VB06Z
2,2,VB05Z
2,3,VB04Z
2,4,VB03Z
3,0,VB05Z
3,1,VB04Z
3,2,VB03Z
3,3,VB02Z
3,4,VB01Z
";

pub const MFF_2024: &str = "\
Org code,Org name,MFF payment index
RRV,University College London Hospitals,1.045678
RX1,Nottingham University Hospitals,1.000005
";

pub const MFF_2023: &str = "\
Org code,Org name,MFF payment index
RRV,University College London Hospitals,1.04
";

/// The fixture as file contents keyed by relative path (what [`RefData::from_files`] takes).
pub fn files() -> BTreeMap<PathBuf, String> {
    let mut f = BTreeMap::new();
    let mut put = |p: &str, t: &str| {
        f.insert(PathBuf::from(p), t.to_string());
    };
    put(super::PROVIDERS, PROVIDERS);
    put(super::COMMISSIONERS, COMMISSIONERS);
    put(super::GP_PRACTICES, GP_PRACTICES);
    put(super::SENDERS, SENDERS);
    put(super::RESTRICTED_CODES, RESTRICTED);
    for (year, apc, op, mff) in [
        ("2024-25", APC_PRICES_2024, OP_PRICES_2024, MFF_2024),
        ("2023-24", APC_PRICES_2023, OP_PRICES_2023, MFF_2023),
    ] {
        put(&format!("{year}/apc_oproc_prices.csv"), apc);
        put(&format!("{year}/op_prices.csv"), op);
        put(&format!("{year}/ec_prices.csv"), EC_PRICES);
        put(&format!("{year}/mff.csv"), mff);
        put(&format!("{year}/hrg_grouper.csv"), HRG_GROUPER);
        put(&format!("{year}/ec_grouper.csv"), EC_GROUPER);
        put(&format!("{year}/ec_hrg.csv"), EC_HRG);
    }
    f
}

/// The fixture reference data.
pub fn refdata() -> RefData {
    RefData::from_files(Path::new("/fixture"), &files()).expect("the fixture reference data loads")
}

/// A date.
pub fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
}

/// A date-time at `hh:00`.
pub fn dt(y: i32, m: u32, day: u32, hh: u32) -> NaiveDateTime {
    d(y, m, day).and_hms_opt(hh, 0, 0).expect("valid test time")
}

/// Common items of a clean upsert for provider `RRV`: valid NHS number 9434765919, status 01, born
/// 1970-06-15, known commissioner and practice.
pub fn common(id: &str) -> Common {
    Common {
        cds_unique_id: id.to_string(),
        cds_update_type: Some(UpdateType::Upsert),
        cds_applicable_datetime: Some(dt(2024, 6, 1, 9)),
        provider_code: "RRV".into(),
        site_code: Some("RRV01".into()),
        commissioner_code: Some("D4U1Y".into()),
        gp_practice_code: Some("A81001".into()),
        nhs_number: Some("9434765919".into()),
        nhs_number_status: Some("01".into()),
        local_patient_id: Some("LP123".into()),
        date_of_birth: Some(d(1970, 6, 15)),
        sex: Some("1".into()),
        ethnic_category: Some("A".into()),
        postcode: Some("LS1 4AP".into()),
    }
}

/// A clean single-episode ordinary elective spell `SP-<id>` of `RRV`: admitted 2024-05-01,
/// discharged 2024-05-03 (LoS 2), primary diagnosis `I10X`, no procedure.
pub fn apc(id: &str) -> Record {
    Record {
        ordinal: 1,
        common: common(id),
        detail: Detail::Apc(ApcItems {
            hospital_provider_spell_number: Some(format!("SP-{id}")),
            episode_number: Some(1),
            last_episode_in_spell: true,
            admission_method: Some("11".into()),
            admission_source: Some("19".into()),
            patient_classification: Some("1".into()),
            discharge_method: Some("1".into()),
            discharge_destination: Some("19".into()),
            admission_date: Some(d(2024, 5, 1)),
            discharge_date: Some(d(2024, 5, 3)),
            episode_start_date: Some(d(2024, 5, 1)),
            episode_end_date: Some(d(2024, 5, 3)),
            main_specialty: Some("110".into()),
            treatment_function_code: Some("110".into()),
            primary_diagnosis: Some("I10X".into()),
            secondary_diagnoses: vec![],
            primary_procedure: None,
            primary_procedure_date: None,
            secondary_procedures: vec![],
            critical_care_days: None,
        }),
    }
}

/// A clean attended first outpatient appointment on 2024-05-10, TFC 110, no procedure.
pub fn op(id: &str) -> Record {
    Record {
        ordinal: 1,
        common: common(id),
        detail: Detail::Op(OpItems {
            appointment_date: Some(d(2024, 5, 10)),
            attended_or_did_not_attend: Some("5".into()),
            first_attendance: Some("1".into()),
            consultation_mechanism: Some("01".into()),
            treatment_function_code: Some("110".into()),
            outcome_of_attendance: Some("1".into()),
            primary_procedure: None,
            primary_diagnosis: None,
        }),
    }
}

/// A clean type 01 emergency attendance arriving 2024-05-10 14:00, no investigations or treatments.
pub fn ec(id: &str) -> Record {
    Record {
        ordinal: 1,
        common: common(id),
        detail: Detail::Ec(EcItems {
            arrival_datetime: Some(dt(2024, 5, 10, 14)),
            departure_datetime: Some(dt(2024, 5, 10, 17)),
            department_type: Some("01".into()),
            arrival_mode: Some("1".into()),
            acuity: Some(3),
            chief_complaint: None,
            investigations: vec![],
            treatments: vec![],
            diagnosis: None,
            discharge_status: None,
        }),
    }
}

/// A deletion of `id` (key items only).
pub fn deletion(dataset: Dataset, id: &str) -> Record {
    let mut r = match dataset {
        Dataset::Apc => apc(id),
        Dataset::Op => op(id),
        Dataset::Ec => ec(id),
    };
    let provider = r.common.provider_code.clone();
    r.common = Common {
        cds_unique_id: id.to_string(),
        cds_update_type: Some(UpdateType::Delete),
        cds_applicable_datetime: Some(dt(2024, 6, 2, 9)),
        provider_code: provider,
        ..Common::default()
    };
    r.detail = match dataset {
        Dataset::Apc => Detail::Apc(ApcItems::default()),
        Dataset::Op => Detail::Op(OpItems::default()),
        Dataset::Ec => Detail::Ec(EcItems::default()),
    };
    r
}

/// The APC items of a record built here.
pub fn apc_mut(r: &mut Record) -> &mut ApcItems {
    match &mut r.detail {
        Detail::Apc(a) => a,
        _ => panic!("not an APC record"),
    }
}

/// The OP items of a record built here.
pub fn op_mut(r: &mut Record) -> &mut OpItems {
    match &mut r.detail {
        Detail::Op(o) => o,
        _ => panic!("not an OP record"),
    }
}

/// The EC items of a record built here.
pub fn ec_mut(r: &mut Record) -> &mut EcItems {
    match &mut r.detail {
        Detail::Ec(e) => e,
        _ => panic!("not an EC record"),
    }
}

/// A Net Change envelope from `RRV`.
pub fn net_change(dataset: Dataset) -> SubmissionMeta {
    SubmissionMeta {
        submission_id: "S0001".into(),
        sender: "RRV".into(),
        dataset,
        protocol: Protocol::NetChange,
    }
}

/// A Bulk Replacement envelope from `RRV` for May 2024 with the dataset's own group.
pub fn bulk(dataset: Dataset) -> SubmissionMeta {
    SubmissionMeta {
        submission_id: "S0002".into(),
        sender: "RRV".into(),
        dataset,
        protocol: Protocol::BulkReplacement {
            bulk_group: dataset.bulk_group().into(),
            period_start: d(2024, 5, 1),
            period_end: d(2024, 5, 31),
            extract_datetime: dt(2024, 6, 3, 10),
            prime_recipient: "D4U1Y".into(),
        },
    }
}
