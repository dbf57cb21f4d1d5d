//! The team page's queries, written once for both backends: each takes
//! the backend's placeholder style and lists its values in binding order.

use super::JobFilter;

pub(super) const SUMMARY_COLUMNS: &str = "local_id, key_id, generation_id, status, model, body, credits_charged, \
                               note, prompt, input, created_at, updated_at, params, inline_media, remixed_from, \
                               hidden_at";

/// A value to bind, in order.
#[derive(Debug, PartialEq)]
pub(super) enum Bind {
    Int(i64),
    Text(String),
}

/// Numbers placeholders as a backend writes them: `?` for SQLite, `$n`
/// for PostgreSQL.
pub(super) type Mark = fn(usize) -> String;

pub(super) fn sqlite_mark(_: usize) -> String {
    "?".to_owned()
}

pub(super) fn postgres_mark(n: usize) -> String {
    format!("${n}")
}

/// A page of jobs, newest (or oldest) first, as `filter` asks. Ties in
/// `created_at` are broken by `local_id`, so a page's cursor never skips
/// or repeats one.
pub(super) fn history(filter: &JobFilter, mark: Mark) -> (String, Vec<Bind>) {
    let mut conditions = Vec::new();
    let mut binds = Vec::new();
    let next = |bind: Bind, binds: &mut Vec<Bind>| {
        binds.push(bind);
        mark(binds.len())
    };
    if let Some(key) = filter.key_id {
        conditions.push(format!("key_id = {}", next(Bind::Int(key), &mut binds)));
    }
    if let Some(status) = &filter.status {
        conditions.push(format!("status = {}", next(Bind::Text(status.clone()), &mut binds)));
    }
    if let Some(model) = &filter.model {
        conditions.push(format!("model = {}", next(Bind::Text(model.clone()), &mut binds)));
    }
    if let Some((created_at, local_id)) = &filter.before {
        let a = next(Bind::Int(*created_at), &mut binds);
        let b = next(Bind::Int(*created_at), &mut binds);
        let c = next(Bind::Text(local_id.clone()), &mut binds);
        conditions.push(format!("(created_at < {a} OR (created_at = {b} AND local_id < {c}))"));
    }
    if let Some((created_at, local_id)) = &filter.after {
        let a = next(Bind::Int(*created_at), &mut binds);
        let b = next(Bind::Int(*created_at), &mut binds);
        let c = next(Bind::Text(local_id.clone()), &mut binds);
        conditions.push(format!("(created_at > {a} OR (created_at = {b} AND local_id > {c}))"));
    }
    if filter.accepted_only {
        conditions.push("generation_id IS NOT NULL".to_owned());
    }
    if filter.visible_only {
        conditions.push("hidden_at IS NULL".to_owned());
    }
    let filter_sql =
        if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    let limit = next(Bind::Int(i64::from(filter.limit)), &mut binds);
    let order = if filter.oldest_first { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM jobs{filter_sql} ORDER BY created_at {order}, local_id {order} LIMIT {limit}"
    );
    (sql, binds)
}

pub(super) fn job_summary(mark: Mark) -> String {
    format!("SELECT {SUMMARY_COLUMNS} FROM jobs WHERE local_id = {}", mark(1))
}

pub(super) fn models_used(key: Option<i64>, mark: Mark) -> String {
    match key {
        Some(_) => format!("SELECT DISTINCT model FROM jobs WHERE key_id = {} ORDER BY model", mark(1)),
        None => "SELECT DISTINCT model FROM jobs ORDER BY model".to_owned(),
    }
}

/// Jobs the upstream may have billed that changed or began at or after
/// the first bind (unix seconds): every job with a generation id.
pub(super) fn billed_jobs(mark: Mark) -> String {
    format!(
        "SELECT {SUMMARY_COLUMNS} FROM jobs WHERE generation_id IS NOT NULL AND (updated_at >= {} OR created_at >= {})",
        mark(1),
        mark(2)
    )
}

pub(super) fn generation_summary(mark: Mark) -> String {
    format!("SELECT {SUMMARY_COLUMNS} FROM jobs WHERE generation_id = {}", mark(1))
}

/// `(key_id, day, credits, jobs)` rows; charges are counted on the day the
/// job was created, which is the day a member asked for it.
pub(super) fn daily_usage(mark: Mark) -> String {
    format!(
        "SELECT key_id, (created_at / 86400) * 86400 AS day, COALESCE(SUM(credits_charged), 0.0) AS credits, \
         COUNT(*) AS jobs FROM jobs WHERE created_at >= {} AND generation_id IS NOT NULL \
         GROUP BY key_id, (created_at / 86400) * 86400 ORDER BY day, key_id",
        mark(1)
    )
}

/// [`daily_usage`]'s rows as records.
pub(super) fn usage(rows: Vec<(i64, i64, f64, i64)>) -> Vec<super::DailyUsage> {
    rows.into_iter()
        .map(|(key_id, day, credits, jobs)| super::DailyUsage {
            key_id,
            day,
            credits,
            jobs: u64::try_from(jobs).unwrap_or(0),
        })
        .collect()
}

/// Deliveries whose last attempt failed: no later attempt is queued.
pub(super) fn failed_deliveries(mark: Mark) -> String {
    format!(
        "SELECT {} FROM webhook_deliveries d WHERE d.state = {} AND NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries l WHERE l.delivery_id = d.delivery_id AND l.attempt > d.attempt) \
         ORDER BY d.id DESC LIMIT {}",
        super::rows::ATTEMPT_COLUMNS,
        mark(1),
        mark(2)
    )
}

pub(super) fn insert_session(mark: Mark) -> String {
    format!(
        "INSERT INTO page_sessions (token_hash, key_id, credential_hash, csrf, created_at, expires_at) \
         VALUES ({}, {}, {}, {}, {}, {})",
        mark(1),
        mark(2),
        mark(3),
        mark(4),
        mark(5),
        mark(6)
    )
}

pub(super) fn expire_sessions(mark: Mark) -> String {
    format!("DELETE FROM page_sessions WHERE expires_at < {}", mark(1))
}

pub(super) fn session(mark: Mark) -> String {
    format!(
        "SELECT key_id, credential_hash, csrf, expires_at FROM page_sessions \
         WHERE token_hash = {} AND expires_at >= {}",
        mark(1),
        mark(2)
    )
}

pub(super) fn delete_session(mark: Mark) -> String {
    format!("DELETE FROM page_sessions WHERE token_hash = {}", mark(1))
}

/// A session row, as [`session`] selects it.
#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    key_id: Option<i64>,
    credential_hash: Vec<u8>,
    csrf: String,
    expires_at: i64,
}

impl TryFrom<SessionRow> for super::PageSession {
    type Error = super::StoreError;

    fn try_from(row: SessionRow) -> super::StoreResult<Self> {
        let credential_hash = <[u8; 32]>::try_from(row.credential_hash.as_slice())
            .map_err(|_| super::StoreError::Corrupt("session credential hash".into()))?;
        Ok(super::PageSession {
            key_id: row.key_id,
            credential_hash,
            csrf: row.csrf,
            expires_at: row.expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filtered_page_binds_its_values_in_order() {
        let filter = JobFilter {
            key_id: Some(3),
            status: Some("error".into()),
            before: Some((100, "b".into())),
            limit: 20,
            ..JobFilter::default()
        };
        let (sql, binds) = history(&filter, postgres_mark);
        assert!(
            sql.contains(
                "key_id = $1 AND status = $2 AND (created_at < $3 OR (created_at = $4 AND local_id < $5))"
            ),
            "{sql}"
        );
        assert!(sql.ends_with("LIMIT $6"), "{sql}");
        assert_eq!(
            binds,
            [
                Bind::Int(3),
                Bind::Text("error".into()),
                Bind::Int(100),
                Bind::Int(100),
                Bind::Text("b".into()),
                Bind::Int(20)
            ]
        );
        let (sql, binds) = history(&JobFilter { limit: 5, ..JobFilter::default() }, sqlite_mark);
        assert!(!sql.contains("WHERE"), "{sql}");
        assert_eq!(binds, [Bind::Int(5)]);
        let videos = JobFilter {
            key_id: Some(3),
            after: Some((100, "b".into())),
            oldest_first: true,
            accepted_only: true,
            visible_only: true,
            limit: 2,
            ..JobFilter::default()
        };
        let (sql, binds) = history(&videos, postgres_mark);
        assert!(
            sql.contains(
                "key_id = $1 AND (created_at > $2 OR (created_at = $3 AND local_id > $4)) \
                 AND generation_id IS NOT NULL AND hidden_at IS NULL"
            ),
            "{sql}"
        );
        assert!(sql.ends_with("ORDER BY created_at ASC, local_id ASC LIMIT $5"), "{sql}");
        assert_eq!(binds.len(), 5);
    }
}
