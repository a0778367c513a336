//! The console's pages: small HTML shells rendered by the server (the person, their CSRF
//! token, the navigation their role allows) that load the page's script and style from
//! `/console/assets`. No inline script or style, no `eval`: the pages work under a strict
//! Content-Security-Policy (`default-src 'self'`). Chart.js is vendored, not fetched.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Console, Role, Staff};

/// The assets, compiled into the binary: (name, content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "login.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/login.js"),
    ),
    (
        "queue.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/queue.js"),
    ),
    (
        "tasks.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/tasks.js"),
    ),
    (
        "contacts.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/contacts.js"),
    ),
    (
        "reports.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/reports.js"),
    ),
    (
        "admin.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/admin.js"),
    ),
    (
        "chart.umd.min.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/vendor/chart.umd.min.js"),
    ),
];

pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // What the pages need and no more: their own scripts, styles and API.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                 base-uri 'none'; form-action 'self'; object-src 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

fn shell(title: &str, head: &str, body_attributes: &str, body: &str, scripts: &[&str]) -> String {
    let scripts: String = scripts
        .iter()
        .map(|name| format!("<script src=\"/console/assets/{name}\" defer></script>\n"))
        .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · Switchboard</title>\n{head}\
         <link rel=\"stylesheet\" href=\"/console/assets/console.css\">\n{scripts}</head>\n\
         <body {body_attributes}>\n{body}\n</body>\n</html>\n",
        title = escape(title),
    )
}

pub fn login() -> Response {
    let body = "<main class=\"login\">\n<h1>Switchboard console</h1>\n\
        <form id=\"login-form\" autocomplete=\"on\">\n\
        <label>Email <input id=\"login-email\" name=\"email\" type=\"email\" required autocomplete=\"username\"></label>\n\
        <label>Password <input id=\"login-password\" name=\"password\" type=\"password\" required autocomplete=\"current-password\"></label>\n\
        <button id=\"login-submit\" type=\"submit\">Sign in</button>\n\
        <p id=\"login-error\" class=\"error\" role=\"alert\"></p>\n</form>\n</main>";
    html(
        StatusCode::OK,
        shell(
            "Sign in",
            "",
            "data-page=\"login\"",
            body,
            &["console.js", "login.js"],
        ),
    )
}

fn nav(staff: &Staff, current: &str) -> String {
    let mut links: Vec<(&str, &str)> = Vec::new();
    if staff.works_conversations() {
        links.push(("queue", "Conversations"));
        links.push(("contacts", "Contacts"));
    }
    if staff.role != Role::Agent {
        links.push(("tasks", "Tasks"));
    }
    if staff.is_admin() {
        links.push(("reports", "Reports"));
        links.push(("admin", "Admin"));
    }
    let items: String = links
        .iter()
        .map(|(page, label)| {
            let current_attr = if *page == current {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"/console/{page}\" id=\"nav-{page}\"{current_attr}>{label}</a>")
        })
        .collect();
    let availability = if staff.works_conversations() {
        "<select id=\"availability\" aria-label=\"Availability\">\
         <option value=\"online\">Online</option><option value=\"away\">Away</option>\
         <option value=\"offline\">Offline</option></select>"
    } else {
        ""
    };
    format!(
        "<header class=\"top\"><strong class=\"brand\">Switchboard</strong><nav>{items}</nav>\
         <span class=\"who\"><span id=\"me-name\">{name}</span> <span class=\"role\">{role}</span> \
         {availability}<button id=\"sign-out\" type=\"button\">Sign out</button>\
         <button id=\"sign-out-everywhere\" type=\"button\" class=\"quiet\">Sign out everywhere</button></span></header>",
        name = escape(&staff.name),
        role = staff.role.as_str(),
    )
}

fn page_body(page: &str) -> &'static str {
    match page {
        "queue" => {
            "<main class=\"workspace\">\n\
            <section class=\"queue\" aria-label=\"Queue\">\n\
            <div class=\"views\" role=\"tablist\">\
            <button data-view=\"unassigned\" role=\"tab\">Unassigned <span class=\"count\" id=\"count-unassigned\">0</span></button>\
            <button data-view=\"mine\" role=\"tab\">Mine <span class=\"count\" id=\"count-mine\">0</span></button>\
            <button data-view=\"team\" role=\"tab\">My team <span class=\"count\" id=\"count-team\">0</span></button>\
            <button data-view=\"all\" role=\"tab\">All <span class=\"count\" id=\"count-all\">0</span></button></div>\n\
            <div class=\"filters\"><select id=\"filter-channel\" aria-label=\"Channel\"><option value=\"\">All channels</option></select>\
            <select id=\"filter-language\" aria-label=\"Language\"><option value=\"\">All languages</option>\
            <option value=\"en\">English</option><option value=\"es\">Spanish</option><option value=\"ca\">Catalan</option></select></div>\n\
            <ul id=\"queue-list\" class=\"queue-list\"></ul>\n</section>\n\
            <section class=\"conversation\" id=\"conversation\" aria-label=\"Conversation\">\
            <p class=\"empty\">Pick a conversation from the queue.</p></section>\n\
            <aside class=\"panel\" id=\"customer-panel\" aria-label=\"Customer\"></aside>\n</main>"
        }
        "tasks" => {
            "<main class=\"tasks-page\">\n<section class=\"task-queues\">\
            <div class=\"filters\"><select id=\"task-status\" aria-label=\"Status\">\
            <option value=\"awaiting_approval\">Awaiting approval</option><option value=\"approved\">Approved</option>\
            <option value=\"in_progress\">In progress</option><option value=\"\">All</option></select>\
            <select id=\"task-queue\" aria-label=\"Queue\"><option value=\"\">All my queues</option></select></div>\
            <ul id=\"task-list\" class=\"task-list\"></ul></section>\n\
            <section class=\"task-detail\" id=\"task-detail\"><p class=\"empty\">Pick a task.</p></section>\n</main>"
        }
        "contacts" => {
            "<main class=\"contacts-page\">\n<form id=\"contact-search\" class=\"search\">\
            <input id=\"contact-query\" type=\"search\" placeholder=\"Name, email, channel id\" aria-label=\"Search contacts\" required>\
            <button type=\"submit\">Search</button></form>\n\
            <ul id=\"contact-results\" class=\"contact-results\"></ul>\n\
            <section id=\"contact-detail\" class=\"contact-detail\"></section>\n</main>"
        }
        "reports" => {
            "<main class=\"reports-page\">\n<form id=\"report-filters\" class=\"filters\">\
            <label>From <input id=\"report-from\" type=\"date\"></label>\
            <label>To <input id=\"report-to\" type=\"date\"></label>\
            <label>Per <select id=\"report-bucket\"><option value=\"day\">day</option><option value=\"hour\">hour</option></select></label>\
            <label>Channel <input id=\"report-channel\" placeholder=\"any\"></label>\
            <label>Team <input id=\"report-team\" placeholder=\"any\"></label>\
            <button type=\"submit\">Show</button></form>\n\
            <section class=\"figures\" id=\"report-figures\"></section>\n\
            <section class=\"charts\"><figure><figcaption>Conversations</figcaption><canvas id=\"chart-volume\"></canvas></figure>\
            <figure><figcaption>By channel</figcaption><canvas id=\"chart-channels\"></canvas></figure>\
            <figure><figcaption>Handoff reasons</figcaption><canvas id=\"chart-reasons\"></canvas></figure>\
            <figure><figcaption>Satisfaction</figcaption><canvas id=\"chart-satisfaction\"></canvas></figure>\
            <figure><figcaption>Tasks by state</figcaption><canvas id=\"chart-tasks\"></canvas></figure></section>\n</main>"
        }
        "admin" => {
            "<main class=\"admin-page\">\n\
            <section><h2>People</h2><table id=\"users\"></table>\
            <form id=\"new-user\" class=\"inline\"><input name=\"email\" type=\"email\" placeholder=\"email\" required>\
            <input name=\"name\" placeholder=\"name\" required><input name=\"password\" type=\"password\" placeholder=\"password (10+)\" required>\
            <select name=\"role\"><option>agent</option><option>backoffice</option><option>admin</option></select>\
            <input name=\"roles\" placeholder=\"roles (finance ...)\"><input name=\"teams\" placeholder=\"teams (support ...)\">\
            <button type=\"submit\">Add person</button></form></section>\n\
            <section><h2>Teams</h2><table id=\"teams\"></table>\
            <form id=\"team-form\" class=\"inline\"><input name=\"name\" placeholder=\"team\" required>\
            <select name=\"assignment\"><option>manual</option><option>round_robin</option><option>least_loaded</option></select>\
            <label><input name=\"restricted\" type=\"checkbox\"> restricted</label>\
            <input name=\"hours\" placeholder='{\"timezone\":\"Europe/Madrid\",\"mon\":\"09:00-18:00\"}' size=\"40\">\
            <select name=\"out_of_hours\"><option>queue</option><option>bot</option></select>\
            <button type=\"submit\">Save team</button></form></section>\n\
            <section><h2>API keys</h2><table id=\"api-keys\"></table>\
            <form id=\"new-key\" class=\"inline\"><input name=\"name\" placeholder=\"name\" required>\
            <input name=\"scopes\" placeholder=\"scopes (tasks:read ...)\" required><input name=\"roles\" placeholder=\"roles\">\
            <button type=\"submit\">Create key</button></form><p id=\"new-key-secret\" class=\"secret\"></p></section>\n\
            <section><h2>Canned replies</h2><table id=\"canned\"></table>\
            <form id=\"new-canned\" class=\"inline\"><input name=\"shortcut\" placeholder=\"shortcut\" required>\
            <input name=\"title\" placeholder=\"title\" required><input name=\"body\" placeholder=\"Hello {{customer.name}}, ...\" size=\"50\" required>\
            <button type=\"submit\">Add</button></form></section>\n\
            <section><h2>Channels</h2><table id=\"channels\"></table></section>\n</main>"
        }
        _ => "",
    }
}

/// A console page for a signed-in person.
pub fn page(console: &Console, staff: &Staff, page: &str) -> Response {
    let head = format!(
        "<meta name=\"csrf-token\" content=\"{}\">\n",
        escape(&staff.csrf_token)
    );
    let attributes = format!(
        "data-page=\"{page}\" data-user-id=\"{}\" data-role=\"{}\" data-availability=\"{}\" \
         data-first-response-secs=\"{}\"",
        escape(&staff.id),
        staff.role.as_str(),
        escape(&staff.availability),
        console.settings.first_response_target_secs,
    );
    let body = format!("{}\n{}", nav(staff, page), page_body(page));
    let script = format!("{page}.js");
    let mut scripts = vec!["console.js"];
    if page == "reports" {
        scripts.push("chart.umd.min.js");
    }
    scripts.push(script.as_str());
    let title = match page {
        "queue" => "Conversations",
        "tasks" => "Tasks",
        "contacts" => "Contacts",
        "reports" => "Reports",
        _ => "Admin",
    };
    html(
        StatusCode::OK,
        shell(title, &head, &attributes, &body, &scripts),
    )
}

/// The page a person's role does not open.
pub fn forbidden(staff: &Staff) -> Response {
    let body = format!(
        "{}\n<main class=\"forbidden\"><h1>Not for your role</h1>\
         <p id=\"forbidden\">This page is not available to {} accounts.</p></main>",
        nav(staff, ""),
        staff.role.as_str()
    );
    let head = format!(
        "<meta name=\"csrf-token\" content=\"{}\">\n",
        escape(&staff.csrf_token)
    );
    html(
        StatusCode::FORBIDDEN,
        shell(
            "Forbidden",
            &head,
            "data-page=\"forbidden\"",
            &body,
            &["console.js"],
        ),
    )
}
