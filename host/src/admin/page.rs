//! `GET /`: the status page. Server-rendered HTML with inline CSS, no script, no external asset,
//! refreshed by the browser every few seconds: backends with health and pool bars, sessions
//! (pinned ones marked with the reason), the top digests by total time, the policy set and its
//! last reload, recent health transitions.

use std::fmt::Write;

use super::views::{self, BackendView, PoliciesView, SessionView};
use crate::gateway::Gateway;
use crate::telemetry::digests::{DigestRow, DigestSort};
use crate::telemetry::unix_ms_at;

/// Seconds between refreshes.
const REFRESH_SECS: u32 = 5;
/// Rows of each table at most.
const TOP: usize = 15;

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

use crate::telemetry::human_us as ms;

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d232a;background:#f6f7f9}
h1{font-size:20px;margin:0 0 .2em}h2{font-size:16px;margin:1.4em 0 .4em}
.sub{color:#5b6572;margin-bottom:1em}
table{border-collapse:collapse;background:#fff;width:100%;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#eef1f4;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,monospace;word-break:break-all}
.b{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;color:#fff}
.up{background:#2e7d32}.lagging{background:#ef8f00}.down{background:#c62828}.draining{background:#6d4c9f}
.bar{width:120px;height:10px;background:#e4e7eb;border-radius:5px;display:inline-block;overflow:hidden;vertical-align:middle}
.bar i{display:block;height:100%;background:#1976d2}
tr.pin td{background:#fff4e0}.muted{color:#5b6572}.err{color:#c62828}
";

/// Renders the page.
pub fn render(gw: &Gateway) -> String {
    let mut o = String::with_capacity(32 * 1024);
    let _ = write!(
        o,
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content={REFRESH_SECS}>\
         <title>Sluice</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        o,
        "<h1>Sluice</h1><div class=sub>version {} · up {} s · listening on {} · {} sessions · {} statements</div>",
        env!("CARGO_PKG_VERSION"),
        gw.started.elapsed().as_secs(),
        esc(&gw.config().frontend.listen.to_string()),
        gw.session_count(),
        gw.telemetry.metrics.statement_count(),
    );
    backends(&mut o, &views::backends(gw));
    sessions(&mut o, &views::sessions(gw));
    digests(&mut o, gw);
    policies(&mut o, &views::policies(gw));
    transitions(&mut o, gw);
    o.push_str("</body></html>");
    o
}

fn backends(o: &mut String, bs: &[BackendView]) {
    o.push_str(
        "<h2>Backends</h2><table><tr><th>backend</th><th>role</th><th>health</th><th>lag</th>\
         <th>pool (in use / max)</th><th class=n>idle</th><th class=n>waiting</th><th class=n>acquire p99</th>\
         <th class=n>statements</th><th class=n>errors</th><th class=n>sent</th></tr>",
    );
    for b in bs {
        let pct = (b.pool.in_use * 100)
            .checked_div(b.pool.max)
            .unwrap_or(0)
            .min(100);
        let role = if b.writer {
            format!("{} · writer", b.role)
        } else {
            b.role.to_string()
        };
        let _ = write!(
            o,
            "<tr><td><b>{}</b><br><span class=muted>{}</span></td><td>{}</td>\
             <td><span class='b {}'>{}</span>{}<br><span class=muted>{}</span></td><td>{}</td>\
             <td><span class=bar><i style='width:{pct}%'></i></span> {} / {}</td>\
             <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(&b.name),
            esc(&b.address),
            esc(&role),
            b.health,
            b.health,
            if b.breaker_open { " breaker open" } else { "" },
            esc(&b.why),
            b.lag_ms.map_or("-".to_string(), |l| format!("{l} ms")),
            b.pool.in_use,
            b.pool.max,
            b.pool.idle,
            b.pool.waiting,
            ms(b.pool.acquire_p99_us),
            b.statements,
            b.errors,
            bytes(b.bytes_out),
        );
    }
    o.push_str("</table>");
}

fn sessions(o: &mut String, ss: &[SessionView]) {
    let pinned = ss.iter().filter(|s| s.pinned).count();
    let _ = write!(
        o,
        "<h2>Sessions <span class=muted>({} · {pinned} pinned)</span></h2><table><tr><th class=n>id</th><th>user</th>\
         <th>client</th><th>schema</th><th>state</th><th>statement</th><th>backend held</th><th>pinned because</th></tr>",
        ss.len()
    );
    // Pinned sessions first: they are what an operator looks for.
    let mut order: Vec<&SessionView> = ss.iter().collect();
    order.sort_by_key(|s| (!s.pinned, s.id));
    for s in order.into_iter().take(TOP * 4) {
        let statement = match (&s.statement, s.statement_ms) {
            (Some(q), Some(t)) => {
                format!("<code>{}</code> <span class=muted>{t} ms</span>", esc(q))
            }
            _ => "<span class=muted>-</span>".into(),
        };
        let held = match (&s.backend, s.hold) {
            (Some(b), Some(h)) => format!(
                "{} <span class=muted>#{} {h}</span>",
                esc(b),
                s.backend_thread.unwrap_or(0)
            ),
            _ => "<span class=muted>-</span>".into(),
        };
        let why = if s.pinned {
            format!(
                "<b>{}</b>{}",
                esc(&s.pinned_why.join(", ")),
                s.pinned_by
                    .as_ref()
                    .map(|d| format!("<br>by <code>{}</code>", esc(d)))
                    .unwrap_or_default()
            )
        } else {
            String::new()
        };
        let _ = write!(
            o,
            "<tr{}><td class=n>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{statement}</td><td>{held}</td><td>{why}</td></tr>",
            if s.pinned { " class=pin" } else { "" },
            s.id,
            esc(&s.user),
            esc(&s.client),
            if s.tls { " · TLS" } else { "" },
            esc(s.schema.as_deref().unwrap_or("-")),
            s.state,
        );
    }
    o.push_str("</table>");
}

fn digests(o: &mut String, gw: &Gateway) {
    let rows: Vec<DigestRow> = views::digests(gw, DigestSort::TotalTime, TOP);
    let _ = write!(
        o,
        "<h2>Top statements by total time <span class=muted>({} digests held, {} evicted)</span></h2>\
         <table><tr><th>digest</th><th>user</th><th>backend</th><th class=n>count</th><th class=n>errors</th>\
         <th class=n>total</th><th class=n>p50</th><th class=n>p99</th><th class=n>max</th><th class=n>rows</th></tr>",
        gw.telemetry.digests.len(),
        gw.telemetry.digests.evictions()
    );
    for r in rows {
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td>\
             <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(&r.digest),
            esc(&r.user),
            esc(&r.backend),
            r.count,
            r.errors,
            ms(r.sum_us),
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.max_us),
            r.rows_sent + r.rows_affected,
        );
    }
    o.push_str("</table>");
}

fn policies(o: &mut String, p: &PoliciesView) {
    let last = if p.last_reload.ok {
        "<span class='b up'>ok</span>".to_string()
    } else {
        format!(
            "<span class='b down'>refused</span> <span class=err>{}: {}</span> (the previous set keeps serving)",
            esc(p.last_reload.file.as_deref().unwrap_or("")),
            esc(p.last_reload.reason.as_deref().unwrap_or(""))
        )
    };
    let _ = write!(
        o,
        "<h2>Policies <span class=muted>({}, version {})</span></h2><div class=sub>last reload: {last}</div>",
        esc(p.dir.as_deref().unwrap_or("built-in only")),
        p.version
    );
    o.push_str(
        "<table><tr><th>policy</th><th>kind</th><th>sha256</th><th class=n>calls</th><th class=n>traps</th>\
         <th class=n>deadline hits</th><th class=n>denials</th><th class=n>reports</th></tr>",
    );
    for x in &p.policies {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td class=n>{}</td><td class=n>{}</td>\
             <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(&x.name),
            x.kind,
            esc(x.sha256.get(..12).unwrap_or(&x.sha256)),
            x.calls,
            x.traps,
            x.deadline_hits,
            x.denials,
            x.reports,
        );
    }
    o.push_str("</table>");
}

fn transitions(o: &mut String, gw: &Gateway) {
    let mut all: Vec<(u64, String, crate::pool::backend::RecentTransition)> = gw
        .all_backends()
        .iter()
        .flat_map(|b| {
            b.recent_transitions()
                .into_iter()
                .map(|t| (unix_ms_at(t.at), b.name().to_string(), t))
        })
        .collect();
    all.sort_by_key(|t| std::cmp::Reverse(t.0));
    o.push_str("<h2>Recent health transitions</h2><table><tr><th>when</th><th>backend</th><th>change</th><th>why</th></tr>");
    if all.is_empty() {
        o.push_str("<tr><td colspan=4 class=muted>none since start</td></tr>");
    }
    let now = crate::telemetry::unix_ms();
    for (at, name, t) in all.into_iter().take(TOP) {
        let _ = write!(
            o,
            "<tr><td>{} s ago</td><td>{}</td><td><span class='b {}'>{}</span> → <span class='b {}'>{}</span></td><td>{}</td></tr>",
            now.saturating_sub(at) / 1000,
            esc(&name),
            t.from,
            t.from,
            t.to,
            t.to,
            esc(&t.why)
        );
    }
    o.push_str("</table>");
}
