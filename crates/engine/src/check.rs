//! `coffer check`: the repository's structural check and, on request, a read of its data
//! (all packs, or a rotating subset), recorded in the Repository's status.
//!
//! A data check that finds damaged packs takes them out of the repository at once (their
//! intact blobs salvaged; see `coffer_repo::datacheck`), so that the next backup writes the
//! damaged blobs again rather than deduplicating against them. That needs the repository to
//! itself; when another process holds it, the damage is recorded and the removal is left to
//! the next check.

use coffer_api::{Kind, Repository, Resource};
use coffer_repo::{DataCheckReport, DataSubset, LockError, RemovalOutcome, Repo, RepoLock};
use serde::Serialize;

use crate::{
    backup::repo_err,
    catalog::{update_status, Catalog},
    clock,
    error::{EngineError, EngineResult},
    resolve,
};

/// What one check found and did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckOutcome {
    /// The structural check's findings, after any damaged pack was removed.
    pub problems: Vec<String>,
    /// The data check's report, when the data was read.
    pub data: Option<DataCheckReport>,
    /// What was done about the damaged packs.
    pub removal: Option<RemovalOutcome>,
    /// Who held the repository when the damaged packs could not be removed.
    pub removal_postponed: Option<String>,
    /// Packs found damaged earlier that the index still lists.
    pub still_indexed: Vec<String>,
}

impl CheckOutcome {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
            && self.data.as_ref().is_none_or(|d| d.is_clean())
            && self.still_indexed.is_empty()
    }

    /// Why the repository is not whole, for the status and for a person; empty when it is.
    pub fn reason(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = self.data.as_ref().filter(|d| !d.is_clean()) {
            parts.push(d.summary());
            if let Some(r) = &self.removal {
                parts.push(format!(
                    "the damaged pack(s) were taken out of the repository ({} intact blob(s) \
                     salvaged, {} lost): the next backup writes the lost blobs again; snapshots \
                     whose data is not backed up again stay broken until they are forgotten",
                    r.blobs_salvaged, r.blobs_dropped
                ));
            }
            if let Some(holder) = &self.removal_postponed {
                parts.push(format!(
                    "the damaged pack(s) are still in the index because the repository is in use \
                     ({holder}): run `coffer check --read-data` again when it is free"
                ));
            }
        }
        if !self.still_indexed.is_empty() && self.removal_postponed.is_none() {
            parts.push(format!(
                "pack(s) {} found damaged earlier are still in the index: run `coffer check \
                 --read-data` to take them out",
                self.still_indexed.join(", ")
            ));
        }
        if !self.problems.is_empty() {
            const SHOWN: usize = 5;
            let mut p = self.problems[..self.problems.len().min(SHOWN)].join("; ");
            if self.problems.len() > SHOWN {
                p.push_str(&format!(" (and {} more)", self.problems.len() - SHOWN));
            }
            parts.push(format!("structural check: {p}"));
        }
        parts.join("; ")
    }
}

/// Checks the Repository's structure and, with `read_data`, its data; records the outcome in
/// its status (`integrity`, `integrityReason`, `damagedPacks`, `lastDataCheckTime`).
pub fn run_check(
    cat: &dyn Catalog,
    repo_res: &Repository,
    read_data: Option<DataSubset>,
    at: coffer_api::repository::LocalMount,
) -> EngineResult<CheckOutcome> {
    let access = resolve::repo_access(cat, repo_res, at)?;
    let repo = Repo::open(access.store, &access.password).map_err(|e| repo_err(repo_res, e))?;
    let lock = repo.lock(false).map_err(|e| repo_err(repo_res, e))?;
    let mut out = CheckOutcome::default();
    if let Some(subset) = read_data {
        read(&repo, &lock, repo_res, subset, &mut out)?;
    }
    out.problems = repo.check(false).map_err(|e| repo_err(repo_res, e))?;
    let earlier = repo_res
        .status
        .as_ref()
        .map(|s| s.damaged_packs.clone())
        .unwrap_or_default();
    out.still_indexed = repo
        .indexed_packs(&earlier)
        .map_err(|e| repo_err(repo_res, e))?;
    drop(lock);
    record(cat, repo_res, &out)?;
    Ok(out)
}

/// Reads the packs of `subset` back and, when it finds damage, takes the damaged packs out
/// of the repository if the lock can be had exclusively (it stays exclusive then).
pub(crate) fn read(
    repo: &Repo,
    lock: &RepoLock,
    repo_res: &Repository,
    subset: DataSubset,
    out: &mut CheckOutcome,
) -> EngineResult<()> {
    let report = repo.check_data(subset).map_err(|e| repo_err(repo_res, e))?;
    if !report.is_clean() {
        match lock.upgrade() {
            Ok(()) => {
                out.removal = Some(
                    repo.remove_damaged(&report)
                        .map_err(|e| repo_err(repo_res, e))?,
                );
            }
            Err(LockError::Locked { holder, .. }) => out.removal_postponed = Some(holder),
            Err(e) => return Err(repo_err(repo_res, e.into())),
        }
    }
    out.data = Some(report);
    Ok(())
}

/// The slice a backup reads first when the Repository asks for a rotating data check
/// (`spec.dataCheck.periodDays`) and that slice was not read today; `now` is the current
/// time (RFC 3339, UTC).
pub fn due_subset(repo_res: &Repository, now: &str) -> Option<DataSubset> {
    let period = repo_res.spec.data_check.as_ref()?.period_days.max(1);
    let day_of = |t: &str| {
        t.parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_second().div_euclid(86_400) as u64)
    };
    let day = day_of(now)?;
    let subset = DataSubset::of_day(day, period);
    let st = repo_res.status.as_ref();
    let last_day = st
        .and_then(|s| s.last_data_check_time.as_deref())
        .and_then(day_of);
    let last_subset = st.and_then(|s| s.last_data_check_subset.clone());
    let done = last_day == Some(day) && last_subset == Some(subset.to_string());
    (!done).then_some(subset)
}

fn record(cat: &dyn Catalog, repo_res: &Repository, out: &CheckOutcome) -> EngineResult<()> {
    let now = clock::now();
    let healthy = out.healthy();
    let reason = out.reason();
    let found: Vec<String> = out
        .data
        .iter()
        .flat_map(|d| d.damaged.iter().map(|p| p.id.clone()))
        .collect();
    let written = update_status(
        cat,
        Kind::Repository,
        repo_res.metadata.namespace(),
        &repo_res.metadata.name,
        &mut |r| {
            let Resource::Repository(current) = r else {
                return;
            };
            let rs = current.status_mut();
            rs.integrity = Some(healthy);
            rs.integrity_reason = (!healthy).then(|| reason.clone());
            if healthy {
                rs.damaged_packs.clear();
            } else {
                for p in out.still_indexed.iter().chain(&found) {
                    if !rs.damaged_packs.contains(p) {
                        rs.damaged_packs.push(p.clone());
                    }
                }
            }
            if let Some(d) = &out.data {
                rs.last_data_check_time = Some(now.clone());
                rs.last_data_check_subset = Some(d.subset.clone());
            }
        },
    );
    if written.is_none() {
        return Err(EngineError::Step(format!(
            "the status of Repository {}/{} could not be written (see the log)",
            repo_res.metadata.namespace(),
            repo_res.metadata.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use coffer_api::{
        repository::{DataCheckSpec, RepositoryStatus},
        Repository,
    };
    use coffer_repo::DataSubset;

    use super::due_subset;

    fn repo(period: Option<u32>, last: Option<(&str, &str)>) -> Repository {
        let mut r = Repository::default();
        r.spec.data_check = period.map(|period_days| DataCheckSpec { period_days });
        if let Some((time, subset)) = last {
            r.status = Some(RepositoryStatus {
                last_data_check_time: Some(time.into()),
                last_data_check_subset: Some(subset.into()),
                ..Default::default()
            });
        }
        r
    }

    #[test]
    fn a_backup_reads_todays_slice_once_a_day() {
        // 2024-10-11 is day 20007 since the epoch: slice 20007 % 7 = 1, written 2/7.
        let now = "2024-10-11T12:00:00Z";
        let slice = DataSubset::of_day(20_007, 7);
        assert_eq!(slice.to_string(), "2/7");
        let today = Some(slice);
        let table = [
            (None, None, None),
            (Some(7), None, today),
            (Some(7), Some(("2024-10-11T01:00:00Z", "2/7")), None),
            (Some(7), Some(("2024-10-10T23:59:59Z", "1/7")), today),
            // The period changed today: today's slice of the new period is due.
            (Some(7), Some(("2024-10-11T01:00:00Z", "5/30")), today),
            (
                Some(1),
                Some(("2024-10-10T08:00:00Z", "all")),
                Some(DataSubset::ALL),
            ),
            (Some(1), Some(("2024-10-11T08:00:00Z", "all")), None),
        ];
        for (period, last, want) in table {
            assert_eq!(
                due_subset(&repo(period, last), now),
                want,
                "{period:?} {last:?}"
            );
        }
    }
}
