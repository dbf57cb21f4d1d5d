//! What each page shows, as askama templates (in `templates/page/`) and
//! the values they draw. Every value is escaped by askama on the way out;
//! only the server-drawn chart is marked safe.

use std::collections::BTreeMap;

use askama::Template;

use super::form::{Field, ModelChoice, Widget};
use super::session::{Session, Viewer};
use crate::store::{JobRecord, JobSummary, KeyRecord, WebhookAttempt};

/// The header: who is signed in, where they are, and sign-out's token.
#[derive(Debug, Clone)]
pub(crate) struct Nav {
    pub(crate) who: String,
    pub(crate) admin: bool,
    pub(crate) here: &'static str,
    pub(crate) csrf: String,
}

impl Nav {
    pub(crate) fn of(session: &Session, here: &'static str) -> Nav {
        Nav {
            who: session.viewer.name(),
            admin: matches!(session.viewer, Viewer::Admin),
            here,
            csrf: session.csrf.clone(),
        }
    }
}

/// A job as a card: in listings, on its page, and swapped in live.
#[derive(Debug, Clone)]
pub(crate) struct JobCard {
    pub(crate) id: String,
    pub(crate) generation_id: String,
    pub(crate) owner: Option<String>,
    pub(crate) model: String,
    pub(crate) prompt: String,
    pub(crate) input: Vec<String>,
    pub(crate) status: String,
    pub(crate) live: bool,
    pub(crate) created: String,
    pub(crate) duration: String,
    /// Seconds since the job started, when the card was drawn.
    pub(crate) elapsed: i64,
    pub(crate) credits: String,
    pub(crate) videos: Vec<String>,
    pub(crate) error: String,
    pub(crate) note: String,
    /// "Extend again": the new form, with this job's video as the input.
    pub(crate) extend_again: String,
}

impl JobCard {
    pub(crate) fn new(job: &JobSummary, owner: Option<String>) -> JobCard {
        let generation: Option<aimlvid::Generation> =
            job.body.as_deref().and_then(|b| serde_json::from_str(b).ok());
        let finished = generation.as_ref().is_some_and(|g| g.status.is_finished());
        let videos: Vec<String> = generation
            .as_ref()
            .map(|g| g.video_urls().into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        let error =
            generation.as_ref().and_then(|g| g.error.as_ref()).map(|e| e.message.clone()).unwrap_or_default();
        let end = if finished { job.updated_at } else { crate::calendar::unix_now() };
        let extend_again = videos.first().map_or(String::new(), |url| {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("model", &job.model_for_extending())
                .append_pair("video_url", url)
                .finish();
            format!("/ui/new?{query}")
        });
        JobCard {
            id: job.local_id.clone(),
            generation_id: job.generation_id.clone().unwrap_or_default(),
            owner,
            model: job.model.clone(),
            prompt: job.prompt.clone().unwrap_or_default(),
            input: job.input.as_deref().map(|i| i.lines().map(str::to_owned).collect()).unwrap_or_default(),
            status: job.status.clone(),
            live: job.generation_id.is_some() && !finished,
            created: timestamp(job.created_at),
            duration: duration(end - job.created_at, finished),
            elapsed: (end - job.created_at).max(0),
            credits: job.credits_charged.map(|c| format!("{c:.1}")).unwrap_or_default(),
            videos,
            error,
            note: job.note.clone().unwrap_or_default(),
            extend_again,
        }
    }

    /// Whether the job ended in an error.
    pub(crate) fn failed(&self) -> bool {
        !self.error.is_empty() || matches!(self.status.as_str(), "error" | "failed")
    }
}

impl JobSummary {
    /// The model "extend again" offers: this one if it extends clips, else
    /// the default extend model.
    fn model_for_extending(&self) -> String {
        match aimlvid::catalog::model(&self.model) {
            Some(spec) if spec.family == aimlvid::catalog::Family::Extend => self.model.clone(),
            _ => aimlvid::ExtendModel::default().id().to_owned(),
        }
    }
}

/// `2026-11-30 05:20 UTC`.
pub(crate) fn timestamp(unix: i64) -> String {
    let (day, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    format!("{} {:02}:{:02} UTC", super::chart::day_label(day * 86_400), secs / 3600, secs % 3600 / 60)
}

fn duration(secs: i64, finished: bool) -> String {
    let secs = secs.max(0);
    let text = if secs < 60 { format!("{secs} s") } else { format!("{} min {:02} s", secs / 60, secs % 60) };
    if finished { text } else { format!("{text} so far") }
}

/// A key in the admin's table.
#[derive(Debug, Clone)]
pub(crate) struct KeyRow {
    pub(crate) name: String,
    pub(crate) prefix: String,
    pub(crate) enabled: bool,
    pub(crate) rpm: String,
    pub(crate) max_unfinished: String,
    pub(crate) credit_budget: String,
    pub(crate) budget_period: String,
    pub(crate) allowed_models: String,
    pub(crate) spent: String,
    pub(crate) unfinished: u32,
    pub(crate) webhook: String,
}

impl KeyRow {
    pub(crate) fn new(k: &KeyRecord, unfinished: u32) -> KeyRow {
        let opt = |v: Option<String>| v.unwrap_or_default();
        KeyRow {
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            enabled: k.enabled,
            rpm: opt(k.limits.rpm.map(|v| v.to_string())),
            max_unfinished: k.limits.max_unfinished.map_or_else(|| "unlimited".to_owned(), |v| v.to_string()),
            credit_budget: opt(k.limits.credit_budget.map(|v| v.to_string())),
            budget_period: opt(k.limits.budget_period.map(|p| p.as_str().to_owned())),
            allowed_models: opt(k.limits.allowed_models.as_ref().map(|m| m.join(", "))),
            spent: match k.limits.budget_period {
                Some(p) => format!(
                    "{:.1} (${}; {:.1} this {})",
                    k.credits_used,
                    crate::admin::usd(k.credits_used),
                    k.period_credits,
                    p.as_str()
                ),
                None => format!("{:.1} (${})", k.credits_used, crate::admin::usd(k.credits_used)),
            },
            unfinished,
            webhook: opt(k.webhook_url.clone()),
        }
    }
}

/// A job in the admin's lists of unfinished and unknown jobs.
#[derive(Debug, Clone)]
pub(crate) struct JobLine {
    pub(crate) id: String,
    pub(crate) generation_id: String,
    pub(crate) key: String,
    pub(crate) model: String,
    pub(crate) status: String,
    pub(crate) created: String,
    pub(crate) note: String,
}

impl JobLine {
    pub(crate) fn new(j: &JobRecord, names: &BTreeMap<i64, String>) -> JobLine {
        JobLine {
            id: j.local_id.clone(),
            generation_id: j.generation_id.clone().unwrap_or_default(),
            key: names.get(&j.key_id).cloned().unwrap_or_default(),
            model: j.model.clone(),
            status: j.status.clone(),
            created: timestamp(j.created_at),
            note: j.note.clone().unwrap_or_default(),
        }
    }
}

/// A webhook attempt, in the admin's views.
#[derive(Debug, Clone)]
pub(crate) struct AttemptRow {
    pub(crate) generation_id: String,
    pub(crate) attempt: u32,
    pub(crate) state: String,
    pub(crate) when: String,
    pub(crate) status: String,
    pub(crate) error: String,
}

impl AttemptRow {
    pub(crate) fn new(a: &WebhookAttempt) -> AttemptRow {
        AttemptRow {
            generation_id: a.generation_id.clone(),
            attempt: a.attempt,
            state: a.state.clone(),
            when: timestamp(a.attempted_at_ms.unwrap_or(a.due_at_ms) / 1000),
            status: a.response_status.map(|s| s.to_string()).unwrap_or_default(),
            error: a.error.clone().unwrap_or_default(),
        }
    }
}

/// A key just made, shown once.
#[derive(Clone)]
pub(crate) struct IssuedKey {
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) webhook_secret: Option<String>,
}

/// Names the key only: its secrets go into the page and nowhere else.
impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey").field("name", &self.name).finish_non_exhaustive()
    }
}

#[derive(Template)]
#[template(path = "page/error.html")]
pub(crate) struct ErrorPage {
    pub(crate) title: String,
    pub(crate) message: String,
}

#[derive(Template)]
#[template(path = "page/sign_in.html")]
pub(crate) struct SignInPage {
    pub(crate) title: String,
    pub(crate) csrf: String,
    pub(crate) error: Option<String>,
}

#[derive(Template)]
#[template(path = "page/jobs.html")]
pub(crate) struct JobsPage {
    pub(crate) title: String,
    pub(crate) nav: Nav,
    pub(crate) cards: Vec<JobCard>,
    pub(crate) statuses: Vec<String>,
    pub(crate) models: Vec<String>,
    pub(crate) status: String,
    pub(crate) model: String,
    pub(crate) next: Option<String>,
    pub(crate) first_page: bool,
}

#[derive(Template)]
#[template(path = "page/job.html")]
pub(crate) struct JobPage {
    pub(crate) title: String,
    pub(crate) nav: Nav,
    pub(crate) card: JobCard,
    pub(crate) details: String,
    pub(crate) attempts: Vec<AttemptRow>,
}

#[derive(Template)]
#[template(path = "page/card.html")]
pub(crate) struct CardFragment {
    pub(crate) card: JobCard,
}

#[derive(Template)]
#[template(path = "page/new.html")]
pub(crate) struct NewPage {
    pub(crate) title: String,
    pub(crate) nav: Nav,
    pub(crate) models: Vec<ModelChoice>,
    pub(crate) model: String,
    pub(crate) fields: Vec<Field>,
    pub(crate) error: Option<String>,
    /// Sent as the create's `Idempotency-Key`: a form sent twice (a double
    /// click, a reload) makes one job, not two.
    pub(crate) idempotency: String,
}

#[derive(Template)]
#[template(path = "page/admin.html")]
pub(crate) struct AdminPage {
    pub(crate) title: String,
    pub(crate) nav: Nav,
    pub(crate) keys: Vec<KeyRow>,
    pub(crate) revoked: Vec<String>,
    pub(crate) chart: String,
    pub(crate) legend: Vec<(String, String, String)>,
    pub(crate) unfinished: Vec<JobLine>,
    pub(crate) unfinished_total: usize,
    pub(crate) attention: Vec<JobLine>,
    pub(crate) failed: Vec<(String, AttemptRow)>,
    pub(crate) issued: Option<IssuedKey>,
    pub(crate) error: Option<String>,
    pub(crate) periods: Vec<String>,
    /// A new key's unfinished jobs when the field is left blank.
    pub(crate) default_max_unfinished: u32,
    /// The last reconciliation with the upstream's ledger, if any.
    pub(crate) reconciliation: Option<ReconcileView>,
    /// What the upstream's catalogue last said of this build's models.
    pub(crate) catalogue: Option<CatalogueView>,
}

/// The upstream's catalogue against the build's, as the admin page shows it.
#[derive(Debug)]
pub(crate) struct CatalogueView {
    pub(crate) when: String,
    pub(crate) listed: usize,
    pub(crate) known: usize,
    pub(crate) added: Vec<String>,
    /// `(id, the listed ids most like it)`.
    pub(crate) dropped: Vec<(String, String)>,
}

impl CatalogueView {
    pub(crate) fn new(read: &crate::budget::CatalogueRead) -> CatalogueView {
        CatalogueView {
            when: timestamp(read.at),
            listed: read.changes.listed,
            known: aimlvid::catalog::models().count(),
            added: read.changes.added.clone(),
            dropped: read
                .changes
                .dropped
                .iter()
                .map(|(id, nearest)| (id.clone(), nearest.join(", ")))
                .collect(),
        }
    }
}

/// The last reconciliation, as the admin page shows it.
#[derive(Debug)]
pub(crate) struct ReconcileView {
    /// When the last one was made, if one was.
    pub(crate) when: Option<String>,
    /// A failure since, if the last attempt failed.
    pub(crate) error: Option<String>,
    pub(crate) window: String,
    /// `(kind, generation id, model, key, proxy, ledger, note)`.
    pub(crate) lines: Vec<[String; 7]>,
    /// `(key, proxy, ledger, differs)`.
    pub(crate) spend: Vec<(String, String, String, bool)>,
}

impl ReconcileView {
    pub(crate) fn new(run: &crate::engine::ledger::ReconcileRun) -> ReconcileView {
        let money = |credits: String, usd: &str| format!("{credits} (${usd})");
        let error =
            run.failed.as_ref().map(|(at, why)| format!("The attempt of {} failed: {why}", timestamp(*at)));
        let Some((at, report)) = &run.made else {
            return ReconcileView {
                when: None,
                error,
                window: String::new(),
                lines: Vec::new(),
                spend: Vec::new(),
            };
        };
        let lines = report
            .findings
            .iter()
            .map(|f| {
                let note = match (f.kind, f.adopted) {
                    (crate::reconcile::FindingKind::LostCreate, true) => "adopted: now followed and charged",
                    (crate::reconcile::FindingKind::LostCreate, false) => "the recovery round adopts it",
                    _ => "",
                };
                [
                    f.kind.describe().to_owned(),
                    f.generation_id.clone(),
                    f.model.clone(),
                    f.key.clone().unwrap_or_else(|| "-".into()),
                    f.proxy_credits
                        .zip(f.proxy_usd.as_deref())
                        .map_or_else(|| "-".into(), |(c, u)| money(c.to_string(), u)),
                    f.ledger_credits
                        .zip(f.ledger_usd.as_deref())
                        .map_or_else(|| "-".into(), |(c, u)| money(c.to_string(), u)),
                    note.to_owned(),
                ]
            })
            .collect();
        let spend = report
            .keys
            .iter()
            .chain(std::iter::once(&report.total))
            .map(|s| {
                (
                    s.key.clone().unwrap_or_else(|| "Total".into()),
                    money(s.proxy_credits.to_string(), &s.proxy_usd),
                    money(s.ledger_credits.to_string(), &s.ledger_usd),
                    !s.agrees(),
                )
            })
            .collect();
        let hours = (report.until - report.since) as f64 / 3600.0;
        let window =
            if hours < 48.0 { format!("{hours:.1} hours") } else { format!("{:.1} days", hours / 24.0) };
        ReconcileView { when: Some(timestamp(*at)), error, window, lines, spend }
    }
}

/// Used by the new form's template to pick a field's control.
impl Field {
    pub(crate) fn kind(&self) -> &'static str {
        match self.widget {
            Widget::TextArea => "textarea",
            Widget::Text => "text",
            Widget::Number { .. } => "number",
            Widget::Choice(_) => "choice",
            Widget::YesNo => "yesno",
            Widget::Media { .. } => "media",
            Widget::Json => "json",
        }
    }

    pub(crate) fn choices(&self) -> Vec<String> {
        match &self.widget {
            Widget::Choice(c) => c.clone(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn accept(&self) -> &'static str {
        match self.widget {
            Widget::Media { accept, .. } => accept,
            _ => "",
        }
    }

    pub(crate) fn list(&self) -> bool {
        matches!(self.widget, Widget::Media { list: true, .. })
    }

    pub(crate) fn min(&self) -> String {
        match self.widget {
            Widget::Number { min: Some(v), .. } => v.to_string(),
            _ => String::new(),
        }
    }

    pub(crate) fn max(&self) -> String {
        match self.widget {
            Widget::Number { max: Some(v), .. } => v.to_string(),
            _ => String::new(),
        }
    }

    pub(crate) fn step(&self) -> &'static str {
        match self.widget {
            Widget::Number { step, .. } => step,
            _ => "",
        }
    }
}
