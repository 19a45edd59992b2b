//! Read policy: the one place that decides, for every read path (the `Query` service, Flight and
//! a node's finishing fan-out), the tier a read runs at, the scope it is confined to, what may be
//! filtered or grouped on, and how an anonymised table is controlled. The read use cases
//! (`cluster::reads`) ask here before they open a store.

use super::disclosure::{self, Measure};
use super::{Caller, Scope, Tier, check_identifiers};
use crate::model::Dataset;
use crate::query::{self, Query};
use crate::{Error, Result};
use sus_proto::v1;

/// The record count added to an anonymised query that has none (disclosure control needs it).
pub const HIDDEN_COUNT: &str = "__records";

/// How an anonymised table is controlled ([`disclosure`]).
pub struct Control {
    /// Per aggregate.
    pub measures: Vec<Measure>,
    /// The record count added for control, left out of the output.
    pub hidden: Option<usize>,
    /// A national figure broken down only by dataset, period and point of delivery.
    pub exempt: bool,
}

/// An aggregate the caller may run, with the policy applied.
pub struct AggregateRead {
    pub tier: Tier,
    /// The query, confined to the caller's scope.
    pub query: Query,
    /// The query as sent to other nodes (with the hidden count, if one was added).
    pub spec: v1::QuerySpec,
    /// Disclosure control of the finished table (anonymised tier only).
    pub control: Option<Control>,
    /// The scope, in words, for the audit log.
    pub scope_text: String,
}

/// Checks an aggregate `spec` for `caller`; `finish` when this node finishes the table (partial
/// states never leave a node at the anonymised tier, except between nodes).
pub fn aggregate(caller: &Caller, mut spec: v1::QuerySpec, finish: bool) -> Result<AggregateRead> {
    let tier = caller.tier(Tier::from_proto(spec.tier)?)?;
    if tier == Tier::Anonymised && !caller.via_node && !finish {
        return Err(Error::PermissionDenied(format!(
            "user {} reads at the anonymised tier: only finished, disclosure-controlled tables \
             (AggregateRequest.finish), never partial states",
            caller.user
        )));
    }
    let count = v1::aggregate::Func::Count as i32;
    let mut hidden = None;
    if tier == Tier::Anonymised && finish && !spec.aggregates.iter().any(|a| a.func == count) {
        hidden = Some(spec.aggregates.len());
        spec.aggregates.push(v1::Aggregate {
            func: count,
            field: String::new(),
            name: HIDDEN_COUNT.into(),
        });
    }
    let mut query = Query::from_proto(&spec)?;
    // The anonymised tier's allow-list first, so that its refusal says what is allowed.
    let measures = if tier == Tier::Anonymised {
        Some(disclosure::check(&query)?)
    } else {
        None
    };
    let scope = caller.scope()?;
    scope.check_filters(caller, &query.filters)?;
    check_identifiers(
        tier,
        query.filters.iter().map(|f| f.name.as_str()),
        query.group_by.iter().map(|(n, _)| n.as_str()),
    )?;
    query.scope = scope.filters(query.dataset)?;
    let control = measures.map(|measures| Control {
        measures,
        hidden,
        exempt: disclosure::exempt(scope.is_national(), &query),
    });
    Ok(AggregateRead {
        tier,
        query,
        spec,
        control,
        scope_text: scope.describe(),
    })
}

/// A record-level read the caller may make, with the policy applied.
pub struct RecordRead {
    pub tier: Tier,
    pub dataset: Dataset,
    pub filters: Vec<query::Filter>,
    /// Filters of which a row must pass one (empty: national).
    pub scope: Vec<query::Filter>,
    pub scope_text: String,
}

/// Checks a record-level read of `dataset` for `caller`: the tier it may read at (never
/// anonymised: no record-level reads), its scope, and no identifier filters below the
/// identifiable tier.
pub fn records(
    caller: &Caller,
    asked: i32,
    dataset: &str,
    filters: &[v1::Filter],
) -> Result<RecordRead> {
    let dataset = query::parse_dataset(dataset)?;
    let tier = caller.tier(Tier::from_proto(asked)?)?;
    if tier == Tier::Anonymised {
        return Err(Error::PermissionDenied(format!(
            "user {} reads at the anonymised tier: aggregates only (with disclosure control), no \
             record-level reads",
            caller.user
        )));
    }
    let scope = caller.scope()?;
    let filters = query::parse_filters(dataset, filters)?;
    scope.check_filters(caller, &filters)?;
    check_identifiers(tier, filters.iter().map(|f| f.name.as_str()), [])?;
    Ok(RecordRead {
        tier,
        dataset,
        filters,
        scope: scope.filters(dataset)?,
        scope_text: scope.describe(),
    })
}

/// The tier of a Database Counts read and the providers it covers (`None`: all). Submission
/// activity is per provider: a scope of commissioners has none of its own.
pub fn activity(caller: &Caller, asked: i32) -> Result<(Tier, Option<Vec<String>>)> {
    let tier = caller.tier(Tier::from_proto(asked)?)?;
    let providers = match caller.scope()? {
        Scope::National => None,
        Scope::Orgs { providers, .. } if !providers.is_empty() => Some(providers),
        Scope::Orgs { .. } => {
            return Err(Error::PermissionDenied(format!(
                "user {} (role {}): database counts are per provider; a commissioner has none",
                caller.user,
                caller.role.name()
            )));
        }
    };
    Ok((tier, providers))
}
