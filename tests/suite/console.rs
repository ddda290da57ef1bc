//! The web console in a real browser: Debian's Chromium, headless, driven through the
//! DevTools protocol ([`allsource_tests::cdp`]) against a server with authentication on.
//! The test signs in as a user would (a wrong password first), appends events through the
//! API and sees them arrive in the live tail, opens the entity's state at two times with the
//! keyboard on the time slider, compares two versions, runs a SQL query, opens every other
//! page, and does it again on a phone-sized screen signed in with an API key. Every page must
//! label its controls and log no error in the browser. Screenshots are kept as artifacts in
//! `target/tmp/artifacts/console-*.png`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use allsource_tests::cdp::{Browser, Page, chromium_available};
use allsource_tests::server::{ADMIN_PASSWORD, ADMIN_USERNAME, TestServer};
use serde_json::{Value, json};

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

async fn shoot(page: &Page<'_>, name: &str) {
    let path = artifacts().join(format!("console-{name}.png"));
    // From the top: the header is sticky, and a whole-page capture keeps the scroll position.
    page.eval("window.scrollTo(0, 0)").await;
    page.screenshot(&path).await;
    let size = std::fs::metadata(&path).expect("the screenshot").len();
    // A blank page compresses to a few kilobytes; a rendered one does not.
    assert!(size > 15_000, "{name}: {size} bytes, the page looks blank");
    eprintln!("screenshot: {}", path.display());
}

/// Appends one event with `token`, returns its position.
async fn append(server: &TestServer, token: &str, entity: &str, kind: &str, payload: Value) -> u64 {
    let reply = server
        .client
        .post(server.url("/api/v1/events"))
        .bearer_auth(token)
        .json(&json!({"entity_id": entity, "event_type": kind, "payload": payload}))
        .send()
        .await
        .expect("append");
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.expect("json");
    body["position"].as_u64().expect("a position")
}

/// Controls without a label or an accessible name, on the page as it is now.
async fn unlabelled_controls(page: &Page<'_>) -> Value {
    page.eval(
        "[...document.querySelectorAll('input, select, textarea')]\
           .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length) \
                   && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))\
           .map(el => el.id || el.name || el.outerHTML.slice(0, 80))",
    )
    .await
}

/// Opens the console page `hash` and waits until it has rendered without an error notice.
async fn open_page(page: &Page<'_>, hash: &str, id: &str) {
    page.eval(&format!("location.hash = {}", json!(hash))).await;
    page.wait_for(
        &format!(
            "document.querySelector('#page-{id}') && \
             !document.querySelector('#page-{id} .loading') && \
             document.querySelector('#page-{id}').innerText.length > 0"
        ),
        &format!("the {id} page renders"),
    )
    .await;
    // Live pages may still be loading a part; give them a moment, then look for errors.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let errors = page
        .eval(&format!(
            "[...document.querySelectorAll('#page-{id} .notice.error')].map(e => e.innerText)"
        ))
        .await;
    assert_eq!(errors, json!([]), "the {id} page shows errors");
    assert_eq!(
        unlabelled_controls(page).await,
        json!([]),
        "every control of the {id} page has a label"
    );
}

/// The page's logged errors, but for `expected` (a substring each).
fn unexpected_errors(page: &Page<'_>, expected: &[&str]) -> Vec<String> {
    page.errors()
        .into_iter()
        .filter(|e| !expected.iter().any(|x| e.contains(x)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_signs_in_follows_the_log_travels_in_time_and_runs_sql_in_a_real_browser() {
    if !chromium_available() {
        return;
    }
    let server = TestServer::start_with_auth(|_| {}).await;
    let token = server.login(ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let browser = Browser::launch().await;
    let page = browser.new_page(1280, 900, false).await;
    page.goto(&server.url("/console")).await;

    // Signing in: a wrong password is refused in words, then the right one is taken.
    page.wait_for("document.querySelector('#login-form')", "the sign-in form")
        .await;
    assert_eq!(unlabelled_controls(&page).await, json!([]));
    page.type_into("#login-form input[name=username]", ADMIN_USERNAME)
        .await;
    page.type_into(
        "#login-form input[name=password]",
        "not the password at all",
    )
    .await;
    page.press("Enter").await;
    let refusal = page
        .wait_for(
            "document.querySelector('.login-output .notice.error')?.innerText",
            "the refusal is shown",
        )
        .await;
    let refusal = refusal.as_str().unwrap_or_default().to_lowercase();
    assert!(
        refusal.contains("unauthorized") || refusal.contains("password"),
        "the refusal says what went wrong: {refusal}"
    );
    page.type_into("#login-form input[name=password]", ADMIN_PASSWORD)
        .await;
    page.press("Enter").await;
    let who = page
        .wait_for("document.querySelector('#who')?.innerText", "signed in")
        .await;
    assert!(
        who.as_str().unwrap_or_default().contains(ADMIN_USERNAME),
        "{who}"
    );
    open_page(&page, "#/overview", "overview").await;

    // The live tail: an event appended through the API appears.
    open_page(&page, "#/tail", "tail").await;
    page.wait_for(
        "document.querySelector('#tail-state').innerText === 'live'",
        "the tail is live",
    )
    .await;
    let first = append(
        &server,
        &token,
        "order-1",
        "order.placed",
        json!({"status": "placed", "total": 42}),
    )
    .await;
    page.wait_for(
        &format!("document.querySelector('#tail-rows tr[data-position=\"{first}\"]')?.innerText.includes('order-1')"),
        "the first event arrives in the live tail",
    )
    .await;
    // A later event at a later time (the slider moves over the events' times).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = append(
        &server,
        &token,
        "order-1",
        "order.paid",
        json!({"status": "paid", "paid_by": "card"}),
    )
    .await;
    page.wait_for(
        &format!("document.querySelector('#tail-rows tr[data-position=\"{second}\"]')?.innerText.includes('order.paid')"),
        "the second event arrives in the live tail",
    )
    .await;
    let newest_first = page
        .eval("document.querySelector('#tail-rows tr').dataset.position")
        .await;
    assert_eq!(newest_first, json!(second.to_string()), "newest on top");
    shoot(&page, "live-tail").await;

    // The explorer: the state at the latest time, then at the first with the keyboard.
    open_page(&page, "#/entities?id=order-1", "entities").await;
    page.wait_for(
        "document.querySelector('#state-output')?.dataset.version === '2'",
        "the latest state",
    )
    .await;
    let latest = page
        .eval("document.querySelector('#state-output').innerText")
        .await;
    assert!(
        latest
            .as_str()
            .unwrap_or_default()
            .contains("\"paid_by\": \"card\""),
        "{latest}"
    );
    page.eval("document.querySelector('#state-slider').focus()")
        .await;
    page.press("Home").await;
    page.wait_for(
        "document.querySelector('#state-output')?.dataset.version === '1'",
        "the state at the first event's time",
    )
    .await;
    let then = page
        .eval("document.querySelector('#state-output').innerText")
        .await;
    let then = then.as_str().unwrap_or_default();
    assert!(then.contains("\"status\": \"placed\""), "{then}");
    assert!(
        !then.contains("paid_by"),
        "the state then has no later key: {then}"
    );
    page.press("End").await;
    page.wait_for(
        "document.querySelector('#state-output')?.dataset.version === '2'",
        "back to the latest state",
    )
    .await;
    // The difference from version 1 to version 2.
    page.eval("document.querySelector('#diff-from').value = '1'")
        .await;
    page.eval("document.querySelector('#diff-to').closest('form').requestSubmit()")
        .await;
    let diff = page
        .wait_for(
            "document.querySelector('#diff-output .diff')?.innerText",
            "the difference",
        )
        .await;
    let diff = diff.as_str().unwrap_or_default();
    assert!(diff.contains("~ status: \"placed\" → \"paid\""), "{diff}");
    assert!(diff.contains("+ paid_by: \"card\""), "{diff}");
    assert!(
        !diff.contains("total"),
        "an unchanged key is not a difference: {diff}"
    );
    shoot(&page, "entity").await;

    // SQL: a table and a chart.
    open_page(&page, "#/query", "query").await;
    page.type_into(
        "#sql-editor",
        "SELECT event_type, count(*) AS events FROM events GROUP BY event_type ORDER BY event_type",
    )
    .await;
    page.click("#sql-run").await;
    let summary = page
        .wait_for(
            "document.querySelector('#sql-summary')?.innerText",
            "the SQL answer",
        )
        .await;
    assert!(
        summary.as_str().unwrap_or_default().starts_with("2 rows"),
        "{summary}"
    );
    let cells = page
        .eval("[...document.querySelectorAll('#sql-output > .table-wrap tbody td')].map(td => td.innerText)")
        .await;
    assert_eq!(cells, json!(["order.paid", "1", "order.placed", "1"]));
    page.wait_for(
        "document.querySelector('#chart-output svg rect.bar')",
        "the chart",
    )
    .await;
    shoot(&page, "sql").await;

    // A projection rebuilt from the console, its progress followed to the end.
    let created = server
        .client
        .post(server.url("/api/v1/projections"))
        .bearer_auth(&token)
        .json(&json!({"name": "event_counter"}))
        .send()
        .await
        .expect("create a projection");
    assert_eq!(created.status(), 201);
    open_page(&page, "#/projections?name=event_counter", "projections").await;
    page.click("#projection-rebuild-button").await;
    page.wait_for(
        "document.querySelector('#projection-rebuild')?.innerText.includes('Rebuilt')",
        "the rebuild completes",
    )
    .await;
    shoot(&page, "projection").await;
    let progress = page
        .eval("document.querySelector('#projection-rebuild progress').value")
        .await;
    assert_eq!(progress, json!(100), "the progress bar is full");

    // A funnel through the two steps of the order.
    open_page(&page, "#/analytics", "analytics").await;
    page.type_into(
        "form[aria-label=Funnel] textarea",
        "order.placed\norder.paid",
    )
    .await;
    page.eval("document.querySelector('form[aria-label=Funnel]').requestSubmit()")
        .await;
    let funnel = page
        .wait_for(
            "document.querySelector('#analytics-funnel svg') && document.querySelector('#analytics-funnel').innerText",
            "the funnel",
        )
        .await;
    let funnel = funnel.as_str().unwrap_or_default();
    assert!(
        funnel.contains("Completed\n1"),
        "one entity completes: {funnel}"
    );
    shoot(&page, "analytics").await;

    // Every other page renders for an admin on this data.
    for (hash, id) in [
        ("#/analytics", "analytics"),
        ("#/schemas", "schemas"),
        ("#/projections", "projections"),
        ("#/consumers", "consumers"),
        ("#/admin", "admin"),
        ("#/entities", "entities"),
    ] {
        open_page(&page, hash, id).await;
        shoot(&page, &format!("page-{id}")).await;
    }
    open_page(&page, "#/overview", "overview").await;
    page.wait_for(
        "document.querySelector('#overview-rate svg rect.bar') && document.querySelector('#overview-types svg')",
        "the overview's plots",
    )
    .await;
    shoot(&page, "overview").await;

    // Nothing went wrong in the browser but the refused password.
    assert_eq!(
        unexpected_errors(&page, &["/api/v1/auth/login"]),
        Vec::<String>::new(),
        "the browser logged errors"
    );

    // A phone-sized screen, signed in with an API key: one column, the menu behind a button,
    // nothing wider than the screen.
    let key = server
        .client
        .post(server.url("/api/v1/auth/api-keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "phone", "role": "readonly"}))
        .send()
        .await
        .expect("create a key");
    assert_eq!(key.status(), 201);
    let key: Value = key.json().await.expect("json");
    let phone = browser.new_page(390, 844, true).await;
    phone.goto(&server.url("/console")).await;
    phone
        .wait_for("document.querySelector('#key-form')", "the sign-in page")
        .await;
    phone.click(".key-login summary").await;
    phone
        .type_into(
            "#key-form input[name=api_key]",
            key["key"].as_str().expect("key"),
        )
        .await;
    phone.press("Enter").await;
    phone
        .wait_for("!!document.querySelector('.menu-toggle')", "signed in")
        .await;
    let nav_hidden = phone
        .eval("getComputedStyle(document.querySelector('#nav')).display")
        .await;
    assert_eq!(nav_hidden, json!("none"), "the menu is closed on a phone");
    phone.click(".menu-toggle").await;
    let nav_shown = phone
        .eval("getComputedStyle(document.querySelector('#nav')).display")
        .await;
    assert_eq!(nav_shown, json!("block"), "the menu button opens it");
    // A readonly key sees no admin page.
    let pages = phone
        .eval("[...document.querySelectorAll('#nav a')].map(a => a.getAttribute('href'))")
        .await;
    assert!(!pages.to_string().contains("#/admin"), "{pages}");
    for (hash, id) in [
        ("#/overview", "overview"),
        ("#/entities?id=order-1", "entities"),
    ] {
        open_page(&phone, hash, id).await;
        let overflow = phone
            .eval("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await;
        assert_eq!(overflow, json!(0), "{hash} fits a phone's width");
    }
    phone
        .wait_for(
            "document.querySelector('#state-output')?.dataset.version === '2'",
            "the state on a phone",
        )
        .await;
    shoot(&phone, "phone-entity").await;
    assert_eq!(unexpected_errors(&phone, &[]), Vec::<String>::new());
}

/// With authentication off (`--dev`), the console opens without signing in, as an admin of
/// `default`, and says that users and keys need authentication instead of failing.
#[tokio::test(flavor = "multi_thread")]
async fn without_authentication_the_console_opens_directly() {
    if !chromium_available() {
        return;
    }
    let server = TestServer::start().await;
    let browser = Browser::launch().await;
    let page = browser.new_page(1280, 900, false).await;
    page.goto(&server.url("/console")).await;
    let who = page
        .wait_for(
            "document.querySelector('#who')?.innerText",
            "the console opens",
        )
        .await;
    assert!(
        who.as_str().unwrap_or_default().contains("tenant default"),
        "{who}"
    );
    assert_eq!(
        page.eval("!!document.querySelector('#login-form, #sign-out')")
            .await,
        json!(false),
        "nothing to sign in to or out of"
    );
    open_page(&page, "#/overview", "overview").await;
    open_page(&page, "#/admin", "admin").await;
    let admin = page
        .eval("document.querySelector('#page-admin').innerText")
        .await;
    assert!(
        admin
            .as_str()
            .unwrap_or_default()
            .contains("Authentication is off"),
        "{admin}"
    );
    assert_eq!(unexpected_errors(&page, &[]), Vec::<String>::new());
}
