//! Items of each dataset (the submission header) and the stored Arrow schema.
//!
//! The item table is data: the parser checks headers, mandatory items and formats from it, and the
//! encoder builds the stored columns from it, so an item is described once.
//!
//! Stored schema = the dataset's items (typed; codes dictionary-encoded) followed by the derived
//! columns (`activity_date`, HRG, POD, prices in integer pence, MFF as `Decimal128(10, 6)`, flags).

use crate::model::Dataset;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// How an item's value is written and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// Free text, high cardinality (ids, numbers): `Utf8`.
    Text,
    /// A code from a small code list: `Dictionary(Int32, Utf8)`.
    Code,
    /// `YYYY-MM-DD`: `Date32`.
    Date,
    /// `YYYY-MM-DDTHH:MM:SS`: `Timestamp(Second)`.
    DateTime,
    /// `Y`/`N`: `Boolean`.
    Bool,
    /// A small non-negative integer: `UInt8`.
    U8,
    /// A non-negative integer: `UInt32`.
    U32,
    /// `;`-separated codes: `List(Utf8)`.
    List,
    /// `9` or `1`.
    UpdateType,
}

/// When an item must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mandatory {
    /// In every record, deletions included.
    Always,
    /// In every upsert (`cds_update_type` 9).
    Upsert,
    /// Optional.
    No,
}

/// One data item of a dataset.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    pub name: &'static str,
    pub kind: ItemKind,
    pub mandatory: Mandatory,
}

const fn item(name: &'static str, kind: ItemKind, mandatory: Mandatory) -> Item {
    Item {
        name,
        kind,
        mandatory,
    }
}

use ItemKind as K;
use Mandatory as M;

const COMMON: &[Item] = &[
    item("cds_unique_id", K::Text, M::Always),
    item("cds_update_type", K::UpdateType, M::Always),
    item("cds_applicable_datetime", K::DateTime, M::Always),
    item("provider_code", K::Code, M::Always),
    item("site_code", K::Code, M::No),
    item("commissioner_code", K::Code, M::No),
    item("gp_practice_code", K::Code, M::No),
    item("nhs_number", K::Text, M::No),
    item("nhs_number_status", K::Code, M::No),
    item("local_patient_id", K::Text, M::No),
    item("date_of_birth", K::Date, M::No),
    item("sex", K::Code, M::No),
    item("ethnic_category", K::Code, M::No),
    item("postcode", K::Text, M::No),
];

const APC: &[Item] = &[
    item("hospital_provider_spell_number", K::Text, M::Upsert),
    item("episode_number", K::U8, M::Upsert),
    item("last_episode_in_spell", K::Bool, M::No),
    item("admission_method", K::Code, M::Upsert),
    item("admission_source", K::Code, M::No),
    item("patient_classification", K::Code, M::Upsert),
    item("discharge_method", K::Code, M::No),
    item("discharge_destination", K::Code, M::No),
    item("admission_date", K::Date, M::Upsert),
    item("discharge_date", K::Date, M::No),
    item("episode_start_date", K::Date, M::Upsert),
    item("episode_end_date", K::Date, M::No),
    item("main_specialty", K::Code, M::No),
    item("treatment_function_code", K::Code, M::No),
    item("primary_diagnosis", K::Code, M::No),
    item("secondary_diagnoses", K::List, M::No),
    item("primary_procedure", K::Code, M::No),
    item("primary_procedure_date", K::Date, M::No),
    item("secondary_procedures", K::List, M::No),
    item("critical_care_days", K::U32, M::No),
];

const OP: &[Item] = &[
    item("appointment_date", K::Date, M::Upsert),
    item("attended_or_did_not_attend", K::Code, M::Upsert),
    item("first_attendance", K::Code, M::Upsert),
    item("consultation_mechanism", K::Code, M::No),
    item("treatment_function_code", K::Code, M::Upsert),
    item("outcome_of_attendance", K::Code, M::No),
    item("primary_procedure", K::Code, M::No),
    item("primary_diagnosis", K::Code, M::No),
];

const EC: &[Item] = &[
    item("arrival_datetime", K::DateTime, M::Upsert),
    item("departure_datetime", K::DateTime, M::No),
    item("department_type", K::Code, M::Upsert),
    item("arrival_mode", K::Code, M::No),
    item("acuity", K::U8, M::No),
    item("chief_complaint", K::Code, M::No),
    item("investigations", K::List, M::No),
    item("treatments", K::List, M::No),
    item("diagnosis", K::Code, M::No),
    item("discharge_status", K::Code, M::No),
];

/// The items of a dataset, common items first, in the order of the stored schema.
pub fn items(dataset: Dataset) -> Vec<Item> {
    let own = match dataset {
        Dataset::Apc => APC,
        Dataset::Op => OP,
        Dataset::Ec => EC,
    };
    COMMON.iter().chain(own).copied().collect()
}

/// The derived columns stored after the items (docs/rules.md section 5).
fn derived_fields(dataset: Dataset) -> Vec<Field> {
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let pence = |name: &str| {
        Field::new(name, DataType::Int64, false)
            .with_metadata(HashMap::from([("unit".to_string(), "pence".to_string())]))
    };
    let mut fields = vec![
        Field::new("activity_date", DataType::Date32, false),
        Field::new("age_at_activity", DataType::UInt16, true),
    ];
    if dataset == Dataset::Apc {
        fields.push(Field::new("episode_los", DataType::Int32, true));
        fields.push(Field::new("spell_los", DataType::Int32, true));
    }
    fields.push(Field::new("hrg", dict(), true));
    if dataset == Dataset::Apc {
        fields.push(Field::new("spell_hrg", dict(), true));
    }
    fields.extend([
        Field::new("pod", dict(), true),
        pence("base_price"),
        Field::new("excess_bed_days", DataType::Int32, false),
        pence("excess_payment"),
        Field::new("mff", DataType::Decimal128(10, 6), false),
        pence("price"),
        Field::new("pbr_excluded", DataType::Boolean, false),
        Field::new("exclusion_reason", dict(), true),
        Field::new("tariff_year", dict(), true),
        Field::new("warnings", DataType::UInt32, false),
        Field::new("restricted", DataType::Boolean, false),
    ]);
    fields
}

/// The Arrow type an item is stored as.
pub fn item_type(kind: ItemKind) -> DataType {
    match kind {
        ItemKind::Text => DataType::Utf8,
        ItemKind::Code | ItemKind::UpdateType => {
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        }
        ItemKind::Date => DataType::Date32,
        ItemKind::DateTime => DataType::Timestamp(TimeUnit::Second, None),
        ItemKind::Bool => DataType::Boolean,
        ItemKind::U8 => DataType::UInt8,
        ItemKind::U32 => DataType::UInt32,
        ItemKind::List => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
    }
}

/// The stored schema of a dataset (cached; cheap to call).
pub fn stored_schema(dataset: Dataset) -> SchemaRef {
    static SCHEMAS: OnceLock<[SchemaRef; 3]> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| Dataset::ALL.map(build_schema));
    all[dataset as usize].clone()
}

fn build_schema(dataset: Dataset) -> SchemaRef {
    let mut fields: Vec<Field> = items(dataset)
        .into_iter()
        .map(|it| {
            let nullable = it.mandatory != Mandatory::Always;
            Field::new(it.name, item_type(it.kind), nullable)
        })
        .collect();
    fields.extend(derived_fields(dataset));
    let metadata = HashMap::from([
        ("sus.dataset".to_string(), dataset.name().to_string()),
        ("sus.cds_type".to_string(), dataset.cds_type().to_string()),
        ("sus.schema_version".to_string(), SCHEMA_VERSION.to_string()),
    ]);
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// Version of the stored schema; bump on any change to columns or their meaning.
pub const SCHEMA_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    // Every dataset's header must be unique and keep the key columns the store relies on.
    #[test]
    fn schemas_have_unique_names_and_key_columns() {
        for ds in Dataset::ALL {
            let schema = stored_schema(ds);
            let mut names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), n, "duplicate column in {ds}");
            for key in [
                "cds_unique_id",
                "cds_applicable_datetime",
                "provider_code",
                "activity_date",
                "price",
            ] {
                assert!(schema.index_of(key).is_ok(), "{ds} lacks {key}");
            }
        }
    }
}
