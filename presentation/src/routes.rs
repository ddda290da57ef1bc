//! The route table: every route the server serves is declared once, in its handler module,
//! with everything the request layers need to know about it.
//!
//! ```text
//! Routes::new()
//!     .get("/api/v1/stats", Requires(Read), entities::stats)
//!     .add(Route::get("/api/v1/events/query", Requires(Read)).with_query(), events::query)
//! ```
//!
//! A [`Route`] carries:
//! - its [`Access`]: public, any credential, or a permission. There is no way to add a route
//!   without one (closed by default).
//! - whether it takes query parameters ([`Route::with_query`]). A route that declares none
//!   refuses every query parameter with 400 `validation_failed` naming it, before its handler
//!   runs; one that declares them parses them into a `deny_unknown_fields` struct
//!   ([`Params`](crate::extract::Params)), which refuses unknown ones the same way.
//! - its admission ([`RequestKind`]): health probes are [`Route::unlimited`]; a `GET` that
//!   needs `read` counts as a query of the tenant's quota unless declared
//!   [`Route::not_counted_as_query`]; everything else is rate-limited only.
//! - whether the policies see it: public routes never; [`Route::exempt_from_policies`] for the
//!   policy routes themselves, so that a bad policy can always be corrected.
//! - its [`RecordCount`] for the policies' `request.record_count`.
//! - its documentation ([`RouteDoc`]) for the OpenAPI document ([`crate::openapi`]): the
//!   request body's and the answer's schemas ([`Route::body`], [`Route::returns`], or
//!   [`Route::returns_any_json`] for an answer that really is arbitrary JSON), the query
//!   parameters ([`Route::params`]), the success statuses ([`Route::responds`]) and the
//!   route's own problem statuses ([`Route::problems`]). The defaults fit most routes: `POST`
//!   and `PUT` take a JSON body, the answer is `200` with JSON; the problem statuses every
//!   route shares are derived from the declaration (access, admission, path parameters, body).
//!   A test of [`crate::openapi`] refuses a JSON body or a JSON answer without its type.
//!
//! [`Routes::into_router`] wraps every route in the one request layer of [`guard`], which
//! receives the route's declaration directly: authentication, admission, authorization and
//! policies each read it without looking anything up. [`api_routes`] merges every handler
//! module's table; the router serves it and [`served_routes`] lists it, so tests walk exactly
//! what is served.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware;
use axum::routing::{MethodFilter, MethodRouter, on};
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::Schema;
use utoipa::{IntoParams, ToSchema};

use allsource_application::use_cases::RequestKind;
use allsource_domain::Permission;

use crate::AppState;
use crate::access::Access;
use crate::guard;

/// An HTTP method a route can be declared for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
        }
    }

    pub fn method(self) -> Method {
        match self {
            Self::Get => Method::GET,
            Self::Post => Method::POST,
            Self::Put => Method::PUT,
            Self::Delete => Method::DELETE,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Put => MethodFilter::PUT,
            Self::Delete => MethodFilter::DELETE,
        }
    }
}

/// What the policies' `request.record_count` is for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCount {
    /// The `limit` query parameter, when it is a number.
    FromLimit,
    /// Exactly one record (a single append).
    One,
    /// The number of elements of the body's top-level `events` array (a batch): the body is
    /// read by the policy step, within the body limit.
    EventsInBody,
}

/// Whether the policy engine sees a route's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyScope {
    Enforced,
    Exempt,
}

/// A schema of the OpenAPI document, by type: functions rather than values, so that a
/// [`Route`] stays `Copy` and its builders `const`.
#[derive(Debug, Clone, Copy)]
pub struct SchemaOf {
    /// The component name (`#/components/schemas/<name>`).
    pub name: fn() -> std::borrow::Cow<'static, str>,
    /// The type's own schema.
    pub schema: fn() -> RefOr<Schema>,
    /// The schemas it refers to, recursively.
    pub schemas: fn(&mut Vec<(String, RefOr<Schema>)>),
}

impl SchemaOf {
    pub const fn of<T: ToSchema>() -> Self {
        Self {
            name: T::name,
            schema: T::schema,
            schemas: T::schemas,
        }
    }
}

impl PartialEq for SchemaOf {
    fn eq(&self, other: &Self) -> bool {
        (self.name)() == (other.name)()
    }
}

impl Eq for SchemaOf {}

/// The query parameters of a route, from their `IntoParams` type.
#[derive(Debug, Clone, Copy)]
pub struct ParamsOf(pub fn() -> Vec<Parameter>);

impl ParamsOf {
    pub const fn of<P: IntoParams>() -> Self {
        Self(query_parameters::<P>)
    }
}

fn query_parameters<P: IntoParams>() -> Vec<Parameter> {
    P::into_params(|| Some(ParameterIn::Query))
}

impl PartialEq for ParamsOf {
    fn eq(&self, other: &Self) -> bool {
        (self.0)() == (other.0)()
    }
}

impl Eq for ParamsOf {}

/// What the OpenAPI document says of a route's success answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Nothing declared: documented as any JSON value. A test refuses it for a route that
    /// answers JSON, so a new route cannot be added without its answer's type.
    Undeclared,
    /// A `T` ([`Route::returns`]).
    Typed(SchemaOf),
    /// Any JSON value, by decision ([`Route::returns_any_json`]): the answer really is
    /// arbitrary JSON.
    AnyJson,
}

/// What the OpenAPI document says of a route beyond what the rest of its declaration implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDoc {
    /// A one-line summary (the description is the route's section of `docs/API.md`).
    pub summary: Option<&'static str>,
    /// Whether the route reads a JSON body (default: `POST` and `PUT`).
    pub takes_body: bool,
    /// Whether the body may be left out (an empty body means the defaults).
    pub body_optional: bool,
    /// The body's schema; `None` with `takes_body`: any JSON object (a test refuses that).
    pub body: Option<SchemaOf>,
    /// What a success answer's body is.
    pub response: Answer,
    /// The success statuses (default `[200]`); `204` and `101` have no body.
    pub success: &'static [u16],
    /// The media type of a success answer (default `application/json`).
    pub media_type: &'static str,
    /// The query parameters, when the route takes some ([`Route::with_query`]).
    pub params: Option<ParamsOf>,
    /// Problem statuses of this route beyond the shared ones (409, 422, ...).
    pub problems: &'static [u16],
}

/// One route's declaration (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub verb: Verb,
    /// The path pattern, as axum matches it (`/api/v1/events/{event_id}`).
    pub path: &'static str,
    pub access: Access,
    /// Whether the route takes query parameters.
    pub takes_query: bool,
    pub admission: RequestKind,
    pub policies: PolicyScope,
    pub records: RecordCount,
    /// Whether the credential may also come as the `access_token` query parameter (streams
    /// that browsers open: WebSocket, SSE).
    pub token_in_query: bool,
    /// Whether a successful answer is a stream that stays open (WebSocket, SSE): clients and
    /// tests that walk every route must not wait for its end.
    pub long_lived: bool,
    /// Public instead of its access when metrics are public by configuration
    /// (`metrics.public`): the `/metrics` route.
    pub metrics_exposure: bool,
    /// Its documentation in the OpenAPI document.
    pub doc: RouteDoc,
}

impl Route {
    /// A route with the defaults the module docs describe.
    pub const fn new(verb: Verb, path: &'static str, access: Access) -> Self {
        let query =
            matches!(verb, Verb::Get) && matches!(access, Access::Requires(Permission::Read));
        Self {
            verb,
            path,
            access,
            takes_query: false,
            admission: if query {
                RequestKind::Query
            } else {
                RequestKind::Limited
            },
            policies: if matches!(access, Access::Public) {
                PolicyScope::Exempt
            } else {
                PolicyScope::Enforced
            },
            records: RecordCount::FromLimit,
            token_in_query: false,
            long_lived: false,
            metrics_exposure: false,
            doc: RouteDoc {
                summary: None,
                takes_body: matches!(verb, Verb::Post | Verb::Put),
                body_optional: false,
                body: None,
                response: Answer::Undeclared,
                success: &[200],
                media_type: "application/json",
                params: None,
                problems: &[],
            },
        }
    }

    pub const fn get(path: &'static str, access: Access) -> Self {
        Self::new(Verb::Get, path, access)
    }

    pub const fn post(path: &'static str, access: Access) -> Self {
        Self::new(Verb::Post, path, access)
    }

    pub const fn put(path: &'static str, access: Access) -> Self {
        Self::new(Verb::Put, path, access)
    }

    pub const fn delete(path: &'static str, access: Access) -> Self {
        Self::new(Verb::Delete, path, access)
    }

    /// The route takes query parameters (its handler parses them with
    /// [`Params`](crate::extract::Params)).
    pub const fn with_query(mut self) -> Self {
        self.takes_query = true;
        self
    }

    /// Never rate-limited nor counted, without rate headers (health probes).
    pub const fn unlimited(mut self) -> Self {
        self.admission = RequestKind::Unlimited;
        self
    }

    /// Rate-limited, but not counted against the query quota.
    pub const fn not_counted_as_query(mut self) -> Self {
        self.admission = RequestKind::Limited;
        self
    }

    /// The policy engine does not see the route's requests.
    pub const fn exempt_from_policies(mut self) -> Self {
        self.policies = PolicyScope::Exempt;
        self
    }

    /// The credential may come as the `access_token` query parameter (declare it among the
    /// route's parameters too).
    pub const fn token_in_query(mut self) -> Self {
        self.token_in_query = true;
        self
    }

    /// A successful answer stays open (a stream).
    pub const fn long_lived(mut self) -> Self {
        self.long_lived = true;
        self
    }

    /// Public when metrics are public by configuration (`metrics.public`), else its access.
    pub const fn metrics_exposure(mut self) -> Self {
        self.metrics_exposure = true;
        self
    }

    /// The route as served when it is public: no credential, no policies.
    pub const fn as_public(mut self) -> Self {
        self.access = Access::Public;
        self.policies = PolicyScope::Exempt;
        self
    }

    /// How the policies count the records of a request.
    pub const fn records(mut self, records: RecordCount) -> Self {
        self.records = records;
        self
    }

    /// The one-line summary of the route in the OpenAPI document.
    pub const fn summary(mut self, summary: &'static str) -> Self {
        self.doc.summary = Some(summary);
        self
    }

    /// The route reads a JSON body of type `T`.
    pub const fn body<T: ToSchema>(mut self) -> Self {
        self.doc.takes_body = true;
        self.doc.body = Some(SchemaOf::of::<T>());
        self
    }

    /// The route reads no body (a `POST` that only triggers something).
    pub const fn no_body(mut self) -> Self {
        self.doc.takes_body = false;
        self.doc.body = None;
        self
    }

    /// The body may be left out (empty: the defaults).
    pub const fn optional_body(mut self) -> Self {
        self.doc.body_optional = true;
        self
    }

    /// A success answer is a `T`.
    pub const fn returns<T: ToSchema>(mut self) -> Self {
        self.doc.response = Answer::Typed(SchemaOf::of::<T>());
        self
    }

    /// A success answer is any JSON value: for an answer that really is arbitrary JSON (a
    /// client's own document), so that the decision is recorded rather than forgotten.
    pub const fn returns_any_json(mut self) -> Self {
        self.doc.response = Answer::AnyJson;
        self
    }

    /// The statuses of a success answer (default `[200]`; `204` and `101` have no body).
    pub const fn responds(mut self, statuses: &'static [u16]) -> Self {
        self.doc.success = statuses;
        self
    }

    /// The media type of a success answer (default `application/json`).
    pub const fn media_type(mut self, media_type: &'static str) -> Self {
        self.doc.media_type = media_type;
        self
    }

    /// The route takes the query parameters of `P` (implies [`Route::with_query`]).
    pub const fn params<P: IntoParams>(mut self) -> Self {
        self.takes_query = true;
        self.doc.params = Some(ParamsOf::of::<P>());
        self
    }

    /// Problem statuses this route answers beyond the ones every route of its kind shares
    /// (see [`crate::openapi`]): a `409` conflict, a `422`, a `408` time limit, ...
    pub const fn problems(mut self, statuses: &'static [u16]) -> Self {
        self.doc.problems = statuses;
        self
    }
}

/// Routes with their declarations, built by each handler module and merged into the router.
#[derive(Default)]
pub struct Routes {
    entries: Vec<(Route, MethodRouter<AppState>)>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `route`, served by `handler`.
    ///
    /// # Panics
    /// When the same method and path is declared twice (a programming error, caught by every
    /// test that builds the router).
    #[must_use]
    pub fn add<H, T>(mut self, route: Route, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.assert_new(&route);
        self.entries.push((route, on(route.verb.filter(), handler)));
        self
    }

    /// # Panics
    /// When `route`'s method and path is declared already.
    fn assert_new(&self, route: &Route) {
        assert!(
            !self
                .entries
                .iter()
                .any(|(r, _)| r.verb == route.verb && r.path == route.path),
            "{} {} is declared twice",
            route.verb.as_str(),
            route.path
        );
    }

    #[must_use]
    pub fn get<H, T>(self, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(Route::get(path, access), handler)
    }

    #[must_use]
    pub fn post<H, T>(self, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(Route::post(path, access), handler)
    }

    #[must_use]
    pub fn put<H, T>(self, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(Route::put(path, access), handler)
    }

    #[must_use]
    pub fn delete<H, T>(self, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(Route::delete(path, access), handler)
    }

    /// Both tables in one.
    ///
    /// # Panics
    /// When a method and path is in both.
    #[must_use]
    pub fn merge(mut self, other: Routes) -> Self {
        for (route, handler) in other.entries {
            self.assert_new(&route);
            self.entries.push((route, handler));
        }
        self
    }

    /// The declarations, in the order they were added.
    pub fn table(&self) -> Vec<Route> {
        self.entries.iter().map(|(route, _)| *route).collect()
    }

    /// The axum router of these routes, each behind the request layer [`guard::guard`] with its
    /// declaration.
    pub fn into_router(self, state: &AppState) -> Router<AppState> {
        let mut router = Router::new();
        for (route, handler) in self.entries {
            let layered = handler.route_layer(middleware::from_fn_with_state(
                guard::Guarded {
                    state: state.clone(),
                    route,
                },
                guard::guard,
            ));
            router = router.route(route.path, layered);
        }
        router
    }
}

/// Every route of the API: the tables of all handler modules.
pub fn api_routes() -> Routes {
    use crate::handlers::backups;
    use crate::handlers::{
        analytics, audit, auth, compaction, consumer_groups, consumers, entities, events, health,
        metrics, pipelines, policies, projections, replay, schemas, snapshots, stream, tenants,
        webhooks,
    };
    Routes::new()
        .merge(health::routes())
        .merge(events::routes())
        .merge(entities::routes())
        .merge(compaction::routes())
        .merge(schemas::routes())
        .merge(auth::routes())
        .merge(snapshots::routes())
        .merge(policies::routes())
        .merge(audit::routes())
        .merge(projections::routes())
        .merge(replay::routes())
        .merge(tenants::routes())
        .merge(consumers::routes())
        .merge(stream::routes())
        .merge(consumer_groups::routes())
        .merge(webhooks::routes())
        .merge(pipelines::routes())
        .merge(analytics::routes())
        .merge(metrics::routes())
        .merge(crate::handlers::docs::routes())
        .merge(crate::handlers::console::routes())
        .merge(backups::routes())
        .merge(crate::handlers::mcp::routes())
}

/// What the router serves: every route's method, path pattern and declaration.
pub fn served_routes() -> Vec<Route> {
    api_routes().table()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The user's API reference, `docs/API.md`: one `### METHOD /path` heading per route.
    const API_REFERENCE: &str = include_str!("../../docs/API.md");

    fn documented_routes() -> BTreeSet<(String, String)> {
        API_REFERENCE
            .lines()
            .filter_map(|line| line.strip_prefix("### "))
            .filter_map(|heading| {
                let (method, path) = heading.split_once(' ')?;
                matches!(method, "GET" | "POST" | "PUT" | "DELETE" | "PATCH")
                    .then(|| (method.to_owned(), path.trim().to_owned()))
            })
            .collect()
    }

    #[test]
    fn the_api_reference_lists_exactly_the_served_routes() {
        let served: BTreeSet<_> = served_routes()
            .iter()
            .map(|r| (r.verb.as_str().to_owned(), r.path.to_owned()))
            .collect();
        let documented = documented_routes();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let not_served: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && not_served.is_empty(),
            "docs/API.md is out of date.\nserved, not documented: {undocumented:?}\n\
             documented, not served: {not_served:?}"
        );
    }

    #[test]
    fn every_route_heading_is_found() {
        // A heading the parser could not read would silently drop out of the comparison.
        let headings = API_REFERENCE
            .lines()
            .filter(|l| {
                l.starts_with("### GET ")
                    || l.starts_with("### POST ")
                    || l.starts_with("### PUT ")
                    || l.starts_with("### DELETE ")
            })
            .count();
        assert_eq!(
            headings,
            documented_routes().len(),
            "a route is documented twice"
        );
        assert!(headings > 50, "only {headings} route headings found");
    }
}
