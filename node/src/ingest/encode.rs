//! Derived records into Arrow record batches of the stored schema ([`crate::schema`]).
//!
//! Each column is built by one accessor resolved once per column from the item table, so adding an
//! item means one line in `schema.rs` and one in [`accessor`].

use crate::model::{Dataset, Derived, DerivedRecord, Detail, Pod, Record, UpdateType, Warnings};
use crate::schema::{ItemKind, items, stored_schema};
use crate::{Error, Result};
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder,
    ListBuilder, RecordBatch, StringBuilder, StringDictionaryBuilder, TimestampSecondBuilder,
    UInt8Builder, UInt16Builder, UInt32Builder,
};
use arrow::datatypes::Int32Type;
use chrono::{NaiveDate, NaiveDateTime};
use std::sync::Arc;

/// A borrowed item value, by kind.
enum Val<'a> {
    Text(Option<&'a str>),
    Date(Option<NaiveDate>),
    DateTime(Option<NaiveDateTime>),
    Bool(bool),
    U8(Option<u8>),
    U32(Option<u32>),
    List(&'a [String]),
    Update(Option<UpdateType>),
}

type Accessor = fn(&Record) -> Val<'_>;

fn s(v: &Option<String>) -> Val<'_> {
    Val::Text(v.as_deref())
}

/// The accessor of a stored item (panics on a name missing here: the item table and this list are
/// ours and must agree, which the tests check for every dataset).
fn accessor(name: &str) -> Accessor {
    macro_rules! apc {
        ($x:ident => $e:expr) => {
            |r| match &r.detail {
                Detail::Apc($x) => $e,
                _ => Val::Text(None),
            }
        };
    }
    macro_rules! op {
        ($x:ident => $e:expr) => {
            |r| match &r.detail {
                Detail::Op($x) => $e,
                _ => Val::Text(None),
            }
        };
    }
    macro_rules! ec {
        ($x:ident => $e:expr) => {
            |r| match &r.detail {
                Detail::Ec($x) => $e,
                _ => Val::Text(None),
            }
        };
    }
    match name {
        "cds_unique_id" => |r| Val::Text(Some(&r.common.cds_unique_id)),
        "cds_update_type" => |r| Val::Update(r.common.cds_update_type),
        "cds_applicable_datetime" => |r| Val::DateTime(r.common.cds_applicable_datetime),
        "provider_code" => |r| Val::Text(Some(&r.common.provider_code)),
        "site_code" => |r| s(&r.common.site_code),
        "commissioner_code" => |r| s(&r.common.commissioner_code),
        "gp_practice_code" => |r| s(&r.common.gp_practice_code),
        "nhs_number" => |r| s(&r.common.nhs_number),
        "nhs_number_status" => |r| s(&r.common.nhs_number_status),
        "local_patient_id" => |r| s(&r.common.local_patient_id),
        "date_of_birth" => |r| Val::Date(r.common.date_of_birth),
        "sex" => |r| s(&r.common.sex),
        "ethnic_category" => |r| s(&r.common.ethnic_category),
        "postcode" => |r| s(&r.common.postcode),
        "hospital_provider_spell_number" => apc!(a => s(&a.hospital_provider_spell_number)),
        "episode_number" => apc!(a => Val::U8(a.episode_number)),
        "last_episode_in_spell" => apc!(a => Val::Bool(a.last_episode_in_spell)),
        "admission_method" => apc!(a => s(&a.admission_method)),
        "admission_source" => apc!(a => s(&a.admission_source)),
        "patient_classification" => apc!(a => s(&a.patient_classification)),
        "discharge_method" => apc!(a => s(&a.discharge_method)),
        "discharge_destination" => apc!(a => s(&a.discharge_destination)),
        "admission_date" => apc!(a => Val::Date(a.admission_date)),
        "discharge_date" => apc!(a => Val::Date(a.discharge_date)),
        "episode_start_date" => apc!(a => Val::Date(a.episode_start_date)),
        "episode_end_date" => apc!(a => Val::Date(a.episode_end_date)),
        "main_specialty" => apc!(a => s(&a.main_specialty)),
        "treatment_function_code" => |r| match &r.detail {
            Detail::Apc(a) => s(&a.treatment_function_code),
            Detail::Op(o) => s(&o.treatment_function_code),
            Detail::Ec(_) => Val::Text(None),
        },
        "primary_diagnosis" => |r| match &r.detail {
            Detail::Apc(a) => s(&a.primary_diagnosis),
            Detail::Op(o) => s(&o.primary_diagnosis),
            Detail::Ec(_) => Val::Text(None),
        },
        "secondary_diagnoses" => apc!(a => Val::List(&a.secondary_diagnoses)),
        "primary_procedure" => |r| match &r.detail {
            Detail::Apc(a) => s(&a.primary_procedure),
            Detail::Op(o) => s(&o.primary_procedure),
            Detail::Ec(_) => Val::Text(None),
        },
        "primary_procedure_date" => apc!(a => Val::Date(a.primary_procedure_date)),
        "secondary_procedures" => apc!(a => Val::List(&a.secondary_procedures)),
        "critical_care_days" => apc!(a => Val::U32(a.critical_care_days)),
        "appointment_date" => op!(o => Val::Date(o.appointment_date)),
        "attended_or_did_not_attend" => op!(o => s(&o.attended_or_did_not_attend)),
        "first_attendance" => op!(o => s(&o.first_attendance)),
        "consultation_mechanism" => op!(o => s(&o.consultation_mechanism)),
        "outcome_of_attendance" => op!(o => s(&o.outcome_of_attendance)),
        "arrival_datetime" => ec!(e => Val::DateTime(e.arrival_datetime)),
        "departure_datetime" => ec!(e => Val::DateTime(e.departure_datetime)),
        "department_type" => ec!(e => s(&e.department_type)),
        "arrival_mode" => ec!(e => s(&e.arrival_mode)),
        "acuity" => ec!(e => Val::U8(e.acuity)),
        "chief_complaint" => ec!(e => s(&e.chief_complaint)),
        "investigations" => ec!(e => Val::List(&e.investigations)),
        "treatments" => ec!(e => Val::List(&e.treatments)),
        "diagnosis" => ec!(e => s(&e.diagnosis)),
        "discharge_status" => ec!(e => s(&e.discharge_status)),
        other => panic!("no accessor for item {other}"),
    }
}

const EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
    Some(d) => d,
    None => panic!("epoch"),
};

fn days(d: NaiveDate) -> i32 {
    // Dates in submissions are within chrono's range; days since 1970 fit an i32.
    (d - EPOCH).num_days() as i32
}

fn item_column(kind: ItemKind, get: Accessor, rows: &[DerivedRecord]) -> ArrayRef {
    let n = rows.len();
    let vals = rows.iter().map(|r| get(&r.record));
    match kind {
        ItemKind::Text => {
            let mut b = StringBuilder::with_capacity(n, n * 12);
            vals.for_each(|v| b.append_option(text(v)));
            Arc::new(b.finish())
        }
        ItemKind::Code => {
            let mut b = StringDictionaryBuilder::<Int32Type>::new();
            vals.for_each(|v| b.append_option(text(v)));
            Arc::new(b.finish())
        }
        ItemKind::UpdateType => {
            let mut b = StringDictionaryBuilder::<Int32Type>::new();
            vals.for_each(|v| match v {
                Val::Update(u) => b.append_option(u.map(UpdateType::code)),
                _ => b.append_null(),
            });
            Arc::new(b.finish())
        }
        ItemKind::Date => {
            let mut b = Date32Builder::with_capacity(n);
            vals.for_each(|v| match v {
                Val::Date(d) => b.append_option(d.map(days)),
                _ => b.append_null(),
            });
            Arc::new(b.finish())
        }
        ItemKind::DateTime => {
            let mut b = TimestampSecondBuilder::with_capacity(n);
            vals.for_each(|v| match v {
                Val::DateTime(t) => b.append_option(t.map(|t| t.and_utc().timestamp())),
                _ => b.append_null(),
            });
            Arc::new(b.finish())
        }
        ItemKind::Bool => {
            let mut b = BooleanBuilder::with_capacity(n);
            vals.for_each(|v| match v {
                Val::Bool(x) => b.append_value(x),
                _ => b.append_null(),
            });
            Arc::new(b.finish())
        }
        ItemKind::U8 => {
            let mut b = UInt8Builder::with_capacity(n);
            vals.for_each(|v| match v {
                Val::U8(x) => b.append_option(x),
                _ => b.append_null(),
            });
            Arc::new(b.finish())
        }
        ItemKind::U32 => {
            let mut b = UInt32Builder::with_capacity(n);
            vals.for_each(|v| match v {
                Val::U32(x) => b.append_option(x),
                _ => b.append_null(),
            });
            Arc::new(b.finish())
        }
        ItemKind::List => {
            let mut b = ListBuilder::new(StringBuilder::new());
            vals.for_each(|v| match v {
                Val::List(xs) => {
                    for x in xs {
                        b.values().append_value(x);
                    }
                    b.append(true);
                }
                _ => b.append(false),
            });
            Arc::new(b.finish())
        }
    }
}

fn text(v: Val<'_>) -> Option<&str> {
    match v {
        Val::Text(t) => t,
        _ => None,
    }
}

fn dict<'a>(rows: &'a [DerivedRecord], f: impl Fn(&'a Derived) -> Option<&'a str>) -> ArrayRef {
    let mut b = StringDictionaryBuilder::<Int32Type>::new();
    rows.iter().for_each(|r| b.append_option(f(&r.derived)));
    Arc::new(b.finish())
}

fn i64s(rows: &[DerivedRecord], f: impl Fn(&Derived) -> i64) -> ArrayRef {
    let mut b = Int64Builder::with_capacity(rows.len());
    rows.iter().for_each(|r| b.append_value(f(&r.derived)));
    Arc::new(b.finish())
}

fn i32s(rows: &[DerivedRecord], f: impl Fn(&Derived) -> Option<i32>) -> ArrayRef {
    let mut b = Int32Builder::with_capacity(rows.len());
    rows.iter().for_each(|r| b.append_option(f(&r.derived)));
    Arc::new(b.finish())
}

fn bools(rows: &[DerivedRecord], f: impl Fn(&Derived) -> bool) -> ArrayRef {
    let mut b = BooleanBuilder::with_capacity(rows.len());
    rows.iter().for_each(|r| b.append_value(f(&r.derived)));
    Arc::new(b.finish())
}

/// Encodes upsert records of one dataset into one batch of its stored schema.
///
/// Every record must have an activity date (a mandatory item of upserts, checked by the parser).
pub fn encode(dataset: Dataset, rows: &[DerivedRecord]) -> Result<RecordBatch> {
    let schema = stored_schema(dataset);
    let mut columns: Vec<ArrayRef> = items(dataset)
        .into_iter()
        .map(|it| item_column(it.kind, accessor(it.name), rows))
        .collect();

    let mut activity = Date32Builder::with_capacity(rows.len());
    for r in rows {
        let d = r.record.activity_date().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "record {} has no activity date; the parser must have rejected it",
                r.record.ordinal
            ))
        })?;
        activity.append_value(days(d));
    }
    columns.push(Arc::new(activity.finish()));
    let mut age = UInt16Builder::with_capacity(rows.len());
    rows.iter()
        .for_each(|r| age.append_option(r.derived.age_at_activity));
    columns.push(Arc::new(age.finish()));
    if dataset == Dataset::Apc {
        columns.push(i32s(rows, |d| d.episode_los));
        columns.push(i32s(rows, |d| d.spell_los));
    }
    columns.push(dict(rows, |d| d.hrg.as_deref()));
    if dataset == Dataset::Apc {
        columns.push(dict(rows, |d| d.spell_hrg.as_deref()));
    }
    columns.push(dict(rows, |d| d.pod.map(|p| p.code())));
    columns.push(i64s(rows, |d| d.base_price));
    columns.push(i32s(rows, |d| Some(d.excess_bed_days)));
    columns.push(i64s(rows, |d| d.excess_payment));
    let mut mff = Decimal128Builder::with_capacity(rows.len());
    rows.iter()
        .for_each(|r| mff.append_value(i128::from(r.derived.mff)));
    columns.push(Arc::new(mff.finish().with_precision_and_scale(10, 6)?));
    columns.push(i64s(rows, |d| d.price));
    columns.push(bools(rows, |d| d.pbr_excluded));
    columns.push(dict(rows, |d| d.exclusion_reason.as_deref()));
    columns.push(dict(rows, |d| d.tariff_year.as_deref()));
    let mut warnings = UInt32Builder::with_capacity(rows.len());
    rows.iter()
        .for_each(|r| warnings.append_value(r.derived.warnings.0));
    columns.push(Arc::new(warnings.finish()));
    columns.push(bools(rows, |d| d.restricted));

    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The derived fields of stored rows (the inverse of [`encode`]'s derived columns), to compare a
/// stored episode's derivation with a new one.
pub fn derived_of(dataset: Dataset, batch: &RecordBatch) -> Result<Vec<Derived>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Decimal128Type, Int64Type, UInt16Type, UInt32Type};
    let col = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| Error::Corruption {
            what: format!("stored {dataset} rows"),
            message: format!("no column {name}"),
        })
    };
    let text = |name: &str| -> Result<arrow::array::StringArray> {
        Ok(
            arrow::compute::cast(col(name)?, &arrow::datatypes::DataType::Utf8)?
                .as_string::<i32>()
                .clone(),
        )
    };
    let bad = |name: &str| Error::Corruption {
        what: format!("stored {dataset} rows"),
        message: format!("column {name} has an unexpected type"),
    };
    let i32s = |name: &str| -> Result<arrow::array::Int32Array> {
        col(name)?
            .as_primitive_opt::<Int32Type>()
            .cloned()
            .ok_or_else(|| bad(name))
    };
    let i64s = |name: &str| -> Result<arrow::array::Int64Array> {
        col(name)?
            .as_primitive_opt::<Int64Type>()
            .cloned()
            .ok_or_else(|| bad(name))
    };
    let bools = |name: &str| -> Result<arrow::array::BooleanArray> {
        col(name)?
            .as_boolean_opt()
            .cloned()
            .ok_or_else(|| bad(name))
    };
    let apc = dataset == Dataset::Apc;
    let age = col("age_at_activity")?
        .as_primitive_opt::<UInt16Type>()
        .cloned()
        .ok_or_else(|| bad("age_at_activity"))?;
    let (episode_los, spell_los, spell_hrg) = if apc {
        (
            Some(i32s("episode_los")?),
            Some(i32s("spell_los")?),
            Some(text("spell_hrg")?),
        )
    } else {
        (None, None, None)
    };
    let hrg = text("hrg")?;
    let pod = text("pod")?;
    let base = i64s("base_price")?;
    let excess_days = i32s("excess_bed_days")?;
    let excess = i64s("excess_payment")?;
    let mff = col("mff")?
        .as_primitive_opt::<Decimal128Type>()
        .cloned()
        .ok_or_else(|| bad("mff"))?;
    let price = i64s("price")?;
    let excluded = bools("pbr_excluded")?;
    let reason = text("exclusion_reason")?;
    let year = text("tariff_year")?;
    let warnings = col("warnings")?
        .as_primitive_opt::<UInt32Type>()
        .cloned()
        .ok_or_else(|| bad("warnings"))?;
    let restricted = bools("restricted")?;
    let opt_i32 = |a: &arrow::array::Int32Array, r: usize| a.is_valid(r).then(|| a.value(r));
    let opt_text =
        |a: &arrow::array::StringArray, r: usize| a.is_valid(r).then(|| a.value(r).to_string());
    (0..batch.num_rows())
        .map(|r| {
            let pod = match opt_text(&pod, r) {
                None => None,
                Some(code) => Some(Pod::parse(&code).ok_or_else(|| Error::Corruption {
                    what: format!("stored {dataset} rows"),
                    message: format!("unknown point of delivery '{code}'"),
                })?),
            };
            Ok(Derived {
                age_at_activity: age.is_valid(r).then(|| age.value(r)),
                episode_los: episode_los.as_ref().and_then(|a| opt_i32(a, r)),
                spell_los: spell_los.as_ref().and_then(|a| opt_i32(a, r)),
                hrg: opt_text(&hrg, r),
                spell_hrg: spell_hrg.as_ref().and_then(|a| opt_text(a, r)),
                pod,
                base_price: base.value(r),
                excess_bed_days: excess_days.value(r),
                excess_payment: excess.value(r),
                mff: i64::try_from(mff.value(r)).map_err(|_| bad("mff"))?,
                price: price.value(r),
                pbr_excluded: excluded.value(r),
                exclusion_reason: opt_text(&reason, r),
                tariff_year: opt_text(&year, r),
                warnings: Warnings(warnings.value(r)),
                restricted: restricted.value(r),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every item of every dataset has an accessor of the item's own dataset.
    #[test]
    fn every_item_has_an_accessor() {
        for ds in Dataset::ALL {
            for it in items(ds) {
                let _ = accessor(it.name);
            }
        }
    }
}
