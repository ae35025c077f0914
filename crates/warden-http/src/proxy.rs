//! One client connection's requests: route, authenticate, inspect and guard (LLM), authorize, limit, forward
//! with warden's credential, and answer with the response masked as it streams. Sessions are per client
//! connection, warden connection and credential (identity, groups, token): the first request of a credential on a
//! connection opens one, so a token narrower than the one before it on the same keep-alive connection is judged as
//! itself; the client connection's close ends them all. A revocation ends the sessions it names at once, cutting
//! their answers mid-stream, and an answer still streaming when its credential expires is cut then.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use parking_lot::Mutex;
use time::OffsetDateTime;
use tracing::{debug, warn};
use warden_llm::Api;

use crate::body::{self, Relay, ResponseBody, Summary};
use crate::error::Refusal;
use crate::hooks::{Authorization, BatchRead, Exchange, HttpHooks, HttpSession, RequestInfo, TokenUsage};
use crate::route::Route;
use crate::{HttpFrontend, MAX_INSPECTED_BODY};

/// The most characters of a prompt or an answer kept in the audit trail.
pub(crate) const AUDIT_TEXT_CAP: usize = 8 * 1024;

/// The most bytes of an uninterpreted request's text read for its record's prompt: masking can shorten a text, so
/// more than [`AUDIT_TEXT_CAP`] is masked, and the record masks the cut start as a stream not yet ended.
const AUDIT_TEXT_READ: usize = 8 * AUDIT_TEXT_CAP;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), and the caller's credentials.
const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"];
const CALLER_CREDENTIALS: [&str; 4] = ["authorization", "proxy-authorization", "x-api-key", "api-key"];

pub(crate) struct ConnectionState {
    frontend: Arc<HttpFrontend>,
    peer: SocketAddr,
    /// The worker thread serving the connection: its requests use that worker's upstream pool.
    worker: usize,
    tls: bool,
    /// The connection's sessions not yet ended, few: one per credential and warden connection used on it.
    sessions: Mutex<Vec<Arc<SessionSlot>>>,
}

pub(crate) struct SessionSlot {
    pub session: HttpSession,
    seq: AtomicU64,
    /// Set when warden ends the session before its client connection closes; cuts its answers still streaming.
    pub(crate) stop: Arc<body::Stop>,
    /// When the session's start could not be queued for the record at once: set once it is (or cannot be).
    started: Option<tokio::sync::watch::Receiver<Option<Result<(), String>>>>,
}

/// What is known of a request by the time it is answered, for its record.
struct Pending {
    started: Instant,
    started_at: OffsetDateTime,
    method: String,
    path: String,
    model: Option<String>,
    stream: bool,
    /// The prompt as sent upstream, unmasked: masked for the audit trail when the record is made, off the path
    /// of the request.
    prompt: Option<String>,
    /// The prompt is only the start of the request's text: the masking window of its connection, with which the
    /// record masks it so that a value cut at its end is left out.
    prompt_cut: Option<usize>,
    /// When the upstream's response head came.
    first_byte: Option<Duration>,
    /// When the request was handed to the upstream connection.
    forwarded: Option<Duration>,
    /// The client gets the answer unmasked (the connection does not mask, or policy permits `unmask`): the record
    /// masks it for the audit trail, as it does the prompt.
    answer_unmasked: bool,
    policies: Vec<Arc<str>>,
    /// Policy refused it: `policies` are the ones that did.
    refused_by_policy: bool,
    request_bytes: u64,
    /// When the request's credential expires, if it does: its answer is cut then (plus the configured grace).
    expires_at: Option<OffsetDateTime>,
    /// An answer of Anthropic batch objects: their `results_url` is moved from the upstream's base URL (first) to the
    /// connection's URL on warden as the client reached it (second).
    results_urls: Option<(String, String)>,
    /// A batch's results, whose usage is summed as they pass: the API, and the batch's key (`<api>:<id>`).
    batch_results: Option<(warden_llm::Api, String)>,
}

impl ConnectionState {
    pub fn new(frontend: Arc<HttpFrontend>, peer: SocketAddr, worker: usize, tls: bool) -> ConnectionState {
        ConnectionState { frontend, peer, worker, tls, sessions: Mutex::new(Vec::new()) }
    }

    /// Ends every session the connection opened (a connection dropped unfinished, as when the workers stop, ends
    /// them too, when the state is dropped).
    pub fn end(&self, reason: &str) {
        let sessions: Vec<Arc<SessionSlot>> = std::mem::take(&mut *self.sessions.lock());
        for slot in sessions {
            self.frontend.end_session(&slot, reason);
        }
    }

    pub async fn handle(self: &Arc<Self>, request: Request<Incoming>) -> Response<ResponseBody> {
        let started = Instant::now();
        let started_at = OffsetDateTime::now_utc();
        let path = request.uri().path().to_string();
        let Some((name, rest)) = split_route(&path) else {
            return Refusal::new(StatusCode::NOT_FOUND, "route", "requests go to /<connection>/<path>").response(None);
        };
        let Some(route) = self.frontend.config.routes.get(name).cloned() else {
            let message = format!("no http connection named \"{name}\"");
            return Refusal::new(StatusCode::NOT_FOUND, "route", message).response(None);
        };
        if has_dot_segment(rest) {
            // `/shop/../admin` would leave the connection's base path upstream, and policies never see it coming.
            let message = "the path has a \".\" or \"..\" segment (plain or percent-encoded); send it normalized";
            return Refusal::new(StatusCode::BAD_REQUEST, "path", message).response(route.api);
        }
        let rest = rest.to_string();
        // Who is calling.
        let Some(credential) = caller_credential(request.headers()) else {
            let message = "no credential: send Authorization: Bearer <API key or token>";
            return self.unauthenticated(&route, StatusCode::UNAUTHORIZED, "unauthenticated", message.into()).await;
        };
        if !self.tls && !self.peer.ip().is_loopback() && !self.frontend.config.allow_plaintext_credentials {
            let message = "a credential over plaintext HTTP from a non-loopback address is refused; use TLS";
            return self.unauthenticated(&route, StatusCode::FORBIDDEN, "plaintext", message.into()).await;
        }
        let identity = match self.frontend.hooks.authenticate(&credential).await {
            Ok(identity) => identity,
            Err(error) => {
                return self
                    .unauthenticated(&route, StatusCode::UNAUTHORIZED, "unauthenticated", error.to_string())
                    .await;
            }
        };
        let user_agent = request.headers().get(header::USER_AGENT).and_then(|value| value.to_str().ok());
        let expires_at = identity.expires_at;
        let slot = self.session(identity, &route.name, user_agent, started_at);
        if let Some(started) = &slot.started {
            // Fail closed: a session whose start cannot be recorded makes no request.
            let mut started = started.clone();
            let outcome = match started.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone().unwrap_or(Ok(())),
                Err(_) => Err("the gateway is shutting down".to_string()),
            };
            if let Err(error) = outcome {
                let message = format!("warden cannot record this session in its audit trail: {error}");
                return Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "audit", message).response(route.api);
            }
        }
        let mut pending = Pending {
            started,
            started_at,
            method: request.method().as_str().to_string(),
            path: rest.clone(),
            model: None,
            stream: false,
            prompt: None,
            prompt_cut: None,
            first_byte: None,
            forwarded: None,
            answer_unmasked: false,
            policies: Vec::new(),
            refused_by_policy: false,
            request_bytes: 0,
            expires_at,
            results_urls: None,
            batch_results: None,
        };
        if let Some(api) = route.api {
            if let Some(id) = warden_llm::reads_batch_results(api, request.method().as_str(), &rest) {
                pending.batch_results = Some((api, format!("{}:{id}", api.name())));
            }
        }
        if route.api.is_some_and(|api| warden_llm::answers_batches(api, request.method().as_str(), &rest)) {
            // The configured public URL, or the listener's scheme and the host the client asked for.
            let gateway = match &self.frontend.config.public_url {
                Some(base) => Some(format!("{base}/{}", route.name)),
                None => {
                    let host = request.headers().get(header::HOST).and_then(|host| host.to_str().ok());
                    let host = host.or_else(|| request.uri().authority().map(|authority| authority.as_str()));
                    // Only a host of the characters a URL's host is made of (so the URL needs no escaping in JSON);
                    // with any other, the URL stays the upstream's.
                    let usable =
                        |host: &&str| host.bytes().all(|byte| byte.is_ascii_alphanumeric() || b".-:[]".contains(&byte));
                    let scheme = if self.tls { "https" } else { "http" };
                    host.filter(usable).map(|host| format!("{scheme}://{host}/{}", route.name))
                }
            };
            if let Some(gateway) = gateway {
                let upstream = format!("{}://{}{}", route.scheme, route.authority, route.base_path);
                pending.results_urls = Some((upstream, gateway));
            }
        }
        let answer = self.forward(&route, &slot, request, &mut pending).await;
        match answer {
            Ok(response) => response,
            Err(refusal) => {
                let hooks = &*self.frontend.hooks;
                // A refusal is answered once its record is queued.
                if let Some(wait) = hooks.exchange(&slot.session, refused(&slot, pending, hooks, &refusal)) {
                    wait.await;
                }
                let mut response = refusal.response(route.api);
                response.headers_mut().insert("x-warden-session", session_header(&slot.session));
                response
            }
        }
    }

    /// A request refused before it has an identity: recorded as such, answered in the route's format.
    async fn unauthenticated(
        &self,
        route: &Route,
        status: StatusCode,
        rule: &str,
        message: String,
    ) -> Response<ResponseBody> {
        let refusal = Refusal::new(status, rule, message);
        if let Some(wait) = self.frontend.hooks.unauthenticated(self.peer, &route.name, &refusal.message) {
            wait.await;
        }
        refusal.response(route.api)
    }

    fn session(
        &self,
        identity: warden_identity::Identity,
        connection: &str,
        user_agent: Option<&str>,
        started_at: OffsetDateTime,
    ) -> Arc<SessionSlot> {
        let mut sessions = self.sessions.lock();
        // A session a revocation ended is gone; its credential is refused before it gets here again.
        sessions.retain(|slot| slot.stop.reason().is_none());
        let same = |slot: &&Arc<SessionSlot>| {
            slot.session.connection == connection && same_credential(&slot.session.identity, &identity)
        };
        if let Some(slot) = sessions.iter().find(same) {
            return slot.clone();
        }
        let session = HttpSession {
            id: self.frontend.hooks.new_session_id(),
            identity,
            connection: connection.to_string(),
            client_address: self.peer,
            user_agent: user_agent.map(str::to_string),
            // When the request that opens it arrived: its record starts then too, and a replay shows the session's
            // start before it.
            started_at,
        };
        let started = self.frontend.hooks.session_started(&session).map(|wait| {
            // Awaited off the request, so a client going away does not lose the record.
            let (done, started) = tokio::sync::watch::channel(None);
            self.frontend.records.later(move || {
                Some(Box::pin(async move {
                    let _ = done.send(Some(wait.await));
                }))
            });
            started
        });
        let slot =
            Arc::new(SessionSlot { session, seq: AtomicU64::new(0), stop: Arc::new(body::Stop::new()), started });
        self.frontend.register(&slot);
        sessions.push(slot.clone());
        slot
    }

    async fn forward(
        &self,
        route: &Arc<Route>,
        slot: &Arc<SessionSlot>,
        request: Request<Incoming>,
        pending: &mut Pending,
    ) -> Result<Response<ResponseBody>, Refusal> {
        let hooks = &self.frontend.hooks;
        let (parts, incoming) = request.into_parts();
        let mut incoming = Some(incoming);
        // An LLM request is read whole: its prompt is inspected, guarded and possibly rewritten. A request to an
        // endpoint warden does not interpret (file uploads, audio, batches…) goes as on a plain connection: streamed,
        // its body and its answer masked by content type.
        // An LLM request: what the response side needs, its body, and its body read (taken by the guard).
        let mut llm: Option<(LlmCall, Bytes, Option<warden_llm::ReadRequest>)> = None;
        // An uninterpreted request's body, once a check below has read it whole (`read_once`), possibly rewritten;
        // a body no check reads streams.
        let mut read: Option<Bytes> = None;
        let endpoint = route.api.map(|api| (api, warden_llm::Endpoint::of(api, parts.method.as_str(), &pending.path)));
        // A batch's tokens are spent after it is created and reported only in its results: where tokens are limited,
        // warden could not hold it to the limit.
        if route.api.is_some_and(|api| warden_llm::creates_batch(api, parts.method.as_str(), &pending.path))
            && hooks.limits_tokens(&route.name)
        {
            let message = format!(
                "connection \"{}\" limits tokens (budget or tokens_per_minute), and a batch's tokens are spent after \
                 it is created, where warden cannot count them: batches are refused on this connection",
                route.name
            );
            return Err(Refusal::new(StatusCode::FORBIDDEN, "limits", message));
        }
        let body_kind = warden_llm::BodyKind::of(Some(full_content_type(&parts.headers)));
        let may_name_a_model = matches!(
            body_kind,
            warden_llm::BodyKind::Json | warden_llm::BodyKind::Multipart | warden_llm::BodyKind::Unknown
        );
        // An OpenAI batch's input file, on a guarded connection, is read whole and each of its requests guarded as
        // one sent now would be (rewritten in place), its one model shown to policy.
        let batch_guard = route.guard.as_ref().filter(|guard| {
            guard.is_active()
                && matches!(endpoint, Some((api, warden_llm::Endpoint::Other))
                    if warden_llm::is_file_upload(api, parts.method.as_str(), &pending.path))
                && body_kind == warden_llm::BodyKind::Multipart
        });
        if let Some(guard) = batch_guard {
            let bytes = read_once(&mut read, &mut incoming, &parts.headers, pending).await?;
            let prompt_masker = hooks.prompt_masker(&route.name);
            if let Some(outcome) = guard
                .apply_batch_upload(full_content_type(&parts.headers), &bytes, &prompt_masker)
                .map_err(|refusal| guard_refusal(&refusal))?
            {
                pending.model = outcome.model;
                pending.prompt = Some(outcome.prompts.join("\n\n"));
                if let Some(rewritten) = outcome.body {
                    read = Some(Bytes::from(rewritten));
                }
            }
        }
        // A batch's input file uploaded in parts could not be guarded line by line: refused on a guarded connection.
        let upload_guard = route.guard.as_ref().filter(|guard| {
            guard.is_active()
                && matches!(endpoint, Some((api, warden_llm::Endpoint::Other))
                    if warden_llm::starts_upload(api, parts.method.as_str(), &pending.path))
        });
        if let Some(guard) = upload_guard {
            let bytes = read_once(&mut read, &mut incoming, &parts.headers, pending).await?;
            guard.check_upload_start(&bytes).map_err(|refusal| guard_refusal(&refusal))?;
        }
        // An uninterpreted JSON, multipart or untyped request, on a connection with a model allow-list: the model it
        // names (a JSON `"model"`, a form's `model` field) is checked like an LLM request's, and shown to policy.
        let guard = route.guard.as_ref().filter(|guard| guard.restricts_models() && may_name_a_model);
        if let (Some((_, warden_llm::Endpoint::Other)), Some(guard)) = (endpoint, guard) {
            let bytes = read_once(&mut read, &mut incoming, &parts.headers, pending).await?;
            let model = warden_llm::named_model(full_content_type(&parts.headers), &bytes).map_err(|error| {
                Refusal::new(StatusCode::BAD_REQUEST, "request", format!("the model it names cannot be read: {error}"))
            })?;
            if let Some(model) = model.as_deref() {
                guard.check_model(Some(model)).map_err(|refusal| guard_refusal(&refusal))?;
            }
            pending.model = model.or(pending.model.take());
        }
        // On a connection that reads prompt texts (deny rules, prompt PII), a request warden does not interpret is
        // read whole too: any text it carries may be a prompt (an image's, speech's input, a moderation's input, a
        // form field, a document). Its texts are checked once policy has allowed it, as an LLM request's prompts are.
        let text_guard = route.guard.as_ref().filter(|guard| {
            guard.checks_texts()
                && body_kind != warden_llm::BodyKind::Binary
                && matches!(endpoint, Some((_, warden_llm::Endpoint::Other)))
        });
        let mut request_texts = None;
        if text_guard.is_some() {
            let bytes = read_once(&mut read, &mut incoming, &parts.headers, pending).await?;
            // Read once: its texts are checked below, and are its record's prompt (the start of them: the record keeps
            // [`AUDIT_TEXT_CAP`] characters), whether or not it is let through.
            let mut texts = warden_llm::RequestTexts::read(full_content_type(&parts.headers), &bytes, AUDIT_TEXT_READ);
            if let Some((text, cut)) = texts.take_record() {
                pending.prompt = Some(text);
                pending.prompt_cut = cut.then_some(route.hold_back);
            }
            request_texts = Some(texts);
        }
        if let Some((api, endpoint)) = endpoint.filter(|(_, endpoint)| *endpoint != warden_llm::Endpoint::Other) {
            let bytes = read_whole(incoming.take().expect("not taken yet"), &parts.headers).await?;
            pending.request_bytes = bytes.len() as u64;
            let read = warden_llm::LlmRequest::read(api, endpoint, &bytes)
                .map_err(|error| Refusal::new(StatusCode::BAD_REQUEST, "request", error.to_string()))?;
            pending.model = read.request.model.clone();
            pending.stream = read.request.stream;
            // Recorded whether or not it is let through: a refused prompt is what the audit trail is for.
            pending.prompt = Some(read.request.prompt_text());
            llm = Some((LlmCall { api, endpoint, strip_usage_chunk: false }, bytes, Some(read)));
        }
        let info = RequestInfo {
            session: &slot.session,
            method: parts.method.as_str(),
            path: &pending.path,
            model: pending.model.as_deref(),
            body: llm.as_ref().map(|(_, bytes, _)| &bytes[..]),
        };
        let masker = match hooks.authorize(&info).await {
            Authorization::Allowed { policies, masker, approval } => {
                pending.policies = policies;
                if let Some(approval) = approval {
                    pending.policies.push(Arc::from(format!("approval:{approval}")));
                }
                masker
            }
            Authorization::Refused { status, rule, message, policies } => {
                pending.policies = policies;
                pending.refused_by_policy = true;
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                return Err(Refusal::new(status, rule, message));
            }
        };
        let inspect_response =
            llm.is_some() || masker.is_some() || pending.results_urls.is_some() || pending.batch_results.is_some();
        let upstream_body: ResponseBody = match llm.as_mut() {
            Some((call, bytes, read)) => {
                // The guard: model allow-list, deny patterns, prompt PII, max_tokens; then the limits.
                let guard = route.guard.as_ref().expect("an LLM route has a guard");
                let prompt_masker = masker.clone().unwrap_or_else(|| hooks.prompt_masker(&route.name));
                let read = read.take().expect("read once, guarded once");
                let outcome = guard.apply_read(read, &prompt_masker).map_err(|refusal| guard_refusal(&refusal))?;
                call.strip_usage_chunk = outcome.strip_usage_chunk;
                hooks.admit_usage(&slot.session, pending.model.as_deref()).map_err(limit_refusal)?;
                let body = match outcome.body {
                    Some(rewritten) => Bytes::from(rewritten),
                    None => bytes.clone(),
                };
                body::full(body)
            }
            None => {
                if route.api.is_some() {
                    // An LLM connection's rate limits count every request.
                    hooks.admit_usage(&slot.session, None).map_err(limit_refusal)?;
                }
                let prompt_masker = || masker.clone().unwrap_or_else(|| hooks.prompt_masker(&route.name));
                if let (Some(guard), Some(texts)) = (text_guard, request_texts.as_ref()) {
                    guard.check_texts(texts, &prompt_masker()).map_err(|refusal| guard_refusal(&refusal))?;
                }
                // The body is masked with the connection's masker, or with the prompts' where they are masked.
                let request_masker = match &masker {
                    Some(masker) => Some(masker.clone()),
                    None => text_guard.filter(|guard| guard.masks_prompts()).map(|_| prompt_masker()),
                };
                let transform = request_masker.and_then(|masker| {
                    body::plain_transform(full_content_type(&parts.headers), masker, route.hold_back)
                });
                match read.take() {
                    Some(bytes) => Relay::new(http_body_util::Full::new(bytes), transform, None).boxed_unsync(),
                    None => {
                        let incoming = incoming.take().expect("a plain request's body is streamed");
                        pending.request_bytes = content_length(&parts.headers).unwrap_or(0);
                        Relay::new(incoming, transform, None).boxed_unsync()
                    }
                }
            }
        };
        let uri = route
            .upstream_uri(&pending.path, parts.uri.query())
            .map_err(|error| Refusal::new(StatusCode::BAD_REQUEST, "request", format!("bad path: {error}")))?;
        let mut upstream = Request::builder().method(parts.method.clone()).uri(uri);
        let headers = upstream.headers_mut().expect("a fresh builder has headers");
        copy_request_headers(&parts.headers, headers, route, inspect_response);
        let upstream = upstream
            .body(upstream_body)
            .map_err(|error| Refusal::new(StatusCode::BAD_REQUEST, "request", error.to_string()))?;
        pending.forwarded = Some(pending.started.elapsed());
        let response = match tokio::time::timeout(route.timeout, route.client(self.worker).request(upstream)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                if let Some(unmaskable) = unmaskable(&error) {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "masking",
                        format!(
                            "connection \"{}\": the request body could not be masked, so it was not sent whole: {unmaskable}",
                            route.name
                        ),
                    ));
                }
                let reason = error_chain(&error);
                warn!(connection = %route.name, error = %reason, "upstream request failed");
                return Err(Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream",
                    format!("connection \"{}\": upstream unreachable: {reason}", route.name),
                ));
            }
            Err(_) => {
                return Err(Refusal::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!("connection \"{}\": no response within {} s", route.name, route.timeout.as_secs()),
                ));
            }
        };
        let call = llm.map(|(call, _, _)| call);
        self.respond(route, slot, response, pending, masker, call, inspect_response).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn respond(
        &self,
        route: &Arc<Route>,
        slot: &Arc<SessionSlot>,
        response: Response<Incoming>,
        pending: &mut Pending,
        masker: Option<warden_mask::Masker>,
        llm: Option<LlmCall>,
        inspect: bool,
    ) -> Result<Response<ResponseBody>, Refusal> {
        let hooks = self.frontend.hooks.clone();
        pending.first_byte = Some(pending.started.elapsed());
        pending.answer_unmasked = masker.is_none();
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert("x-warden-session", session_header(&slot.session));
        let status = parts.status.as_u16();
        let content_type = content_type(&parts.headers).to_string();
        if inspect {
            if let Some(encoding) = parts.headers.get(header::CONTENT_ENCODING) {
                if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
                    let encoding = String::from_utf8_lossy(encoding.as_bytes()).into_owned();
                    return Err(Refusal::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream",
                        format!(
                            "connection \"{}\": the upstream sent a {encoding}-encoded body, which warden cannot \
                             inspect (it asked for identity)",
                            route.name
                        ),
                    ));
                }
            }
        }
        let event_stream = content_type.eq_ignore_ascii_case("text/event-stream");
        let transform: Option<Box<dyn body::Transform>> = match &llm {
            Some(call) if event_stream => Some(Box::new(body::SseTransform::new(warden_llm::ResponseMasker::new(
                call.api,
                call.endpoint,
                masker.clone().unwrap_or_else(body::no_masking),
                route.hold_back,
                call.strip_usage_chunk,
            )))),
            Some(call) => {
                // A JSON answer is small: read whole, masked, then sent with its length.
                let mut bytes = read_upstream(incoming, &route.name).await?;
                let mut gateway = None;
                if let Some((upstream, to)) = &pending.results_urls {
                    if let Some(marked) = warden_llm::gateway_results_urls(&bytes, upstream) {
                        (bytes, gateway) = (Bytes::from(marked), Some(to.clone()));
                    }
                }
                let response_masker = warden_llm::ResponseMasker::new(
                    call.api,
                    call.endpoint,
                    masker.clone().unwrap_or_else(body::no_masking),
                    route.hold_back,
                    call.strip_usage_chunk,
                );
                let (masked, usage, count) = if content_type.to_ascii_lowercase().contains("json") {
                    response_masker.json(&bytes).map_err(|error| {
                        Refusal::new(
                            StatusCode::BAD_GATEWAY,
                            "upstream",
                            format!(
                                "connection \"{}\": the upstream's answer cannot be inspected: {error}",
                                route.name
                            ),
                        )
                    })?
                } else if masker.is_some() {
                    return Err(Refusal::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream",
                        format!(
                            "connection \"{}\": unexpected {content_type} answer, which warden cannot mask",
                            route.name
                        ),
                    ));
                } else {
                    (bytes.to_vec(), None, 0)
                };
                let masked = match &gateway {
                    Some(gateway) => warden_llm::place_gateway(&masked, gateway),
                    None => masked,
                };
                let usage = usage.map(|usage| TokenUsage { input: usage.input_tokens, output: usage.output_tokens });
                if let Some(usage) = usage {
                    hooks.used(&slot.session, pending.model.as_deref(), usage);
                }
                parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(masked.len()));
                let masked = Bytes::from(masked);
                let record = {
                    let (slot, masked) = (slot.clone(), masked.clone());
                    let mut pending = std::mem::replace(pending, Pending::empty());
                    move || {
                        let answer = Some(String::from_utf8_lossy(&masked).into_owned());
                        let summary = Summary { usage, answer, masked: count as u64, batch: None };
                        let length = masked.len() as u64;
                        let exchange = finish(&slot, &mut pending, &*hooks, status, length, None, summary);
                        hooks.exchange(&slot.session, exchange)
                    }
                };
                self.frontend.records.later(record);
                let body = body::full(masked);
                return Ok(Response::from_parts(parts, body));
            }
            None => {
                let content_type = full_content_type(&parts.headers);
                let transform = masker
                    .as_ref()
                    .and_then(|masker| body::plain_transform(content_type, masker.clone(), route.hold_back));
                let transform = match pending.results_urls.take() {
                    Some((upstream, gateway)) => Some(body::results_urls(upstream, gateway, transform)),
                    None => transform,
                };
                // A batch's results, when the upstream sends them whole (an error's body reports no usage, and a
                // range of them, 206, is not all of it).
                match pending.batch_results.take().filter(|_| status == 200) {
                    Some((api, key)) => Some(body::batch_results(key, api, transform)),
                    None => transform,
                }
            }
        };
        let expiry = pending.expires_at.map(|expires_at| {
            let expires_at = expires_at + self.frontend.config.expiry_grace;
            let remaining = (expires_at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
            let at = tokio::time::Instant::now() + Duration::try_from(remaining).unwrap_or_default();
            let message = format!("the credential of identity \"{}\" expired", slot.session.identity.name);
            (at, message)
        });
        // Cut when a revocation ends the session, or when the request's credential expires.
        let cut = body::Cut::new(slot.stop.clone(), expiry);
        if transform.is_some() {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        let record = {
            let slot = slot.clone();
            let hooks = hooks.clone();
            let mut pending = std::mem::replace(pending, Pending::empty());
            let records = self.frontend.records.clone();
            Box::new(move |end: body::End| {
                if let Some(usage) = end.summary.usage {
                    hooks.used(&slot.session, pending.model.as_deref(), usage);
                }
                // The record (and the audit trail's masking) waits until the answer's end is written.
                records.later(move || {
                    let exchange = finish(&slot, &mut pending, &*hooks, status, end.bytes, end.error, end.summary);
                    hooks.exchange(&slot.session, exchange)
                });
            }) as body::OnEnd
        };
        let body = Relay::new(incoming, transform, Some(record)).with_cut(cut).boxed_unsync();
        debug!(connection = %route.name, status, "answering");
        Ok(Response::from_parts(parts, body))
    }
}

impl Drop for ConnectionState {
    fn drop(&mut self) {
        self.end("the gateway shut down");
    }
}

/// What the response side needs to know of an LLM request.
#[derive(Debug, Clone, Copy)]
struct LlmCall {
    api: Api,
    endpoint: warden_llm::Endpoint,
    strip_usage_chunk: bool,
}

impl Pending {
    fn empty() -> Pending {
        Pending {
            started: Instant::now(),
            started_at: OffsetDateTime::now_utc(),
            method: String::new(),
            path: String::new(),
            model: None,
            stream: false,
            prompt: None,
            prompt_cut: None,
            first_byte: None,
            forwarded: None,
            answer_unmasked: false,
            policies: Vec::new(),
            refused_by_policy: false,
            request_bytes: 0,
            expires_at: None,
            results_urls: None,
            batch_results: None,
        }
    }
}

/// Whether two requests' credentials are judged alike: the same identity and groups, and the same token (or none).
fn same_credential(a: &warden_identity::Identity, b: &warden_identity::Identity) -> bool {
    a.name == b.name
        && a.kind == b.kind
        && a.groups == b.groups
        && a.token.as_ref().map(|token| &token.id) == b.token.as_ref().map(|token| &token.id)
}

/// The record of an answered request. The prompt, and an answer the client got unmasked, are masked for the audit
/// trail here, with the connection's masker; both are capped at [`AUDIT_TEXT_CAP`].
fn finish(
    slot: &SessionSlot,
    pending: &mut Pending,
    hooks: &dyn HttpHooks,
    status: u16,
    response_bytes: u64,
    error: Option<String>,
    summary: Summary,
) -> Exchange {
    Exchange {
        seq: slot.seq.fetch_add(1, Ordering::Relaxed) + 1,
        started_at: pending.started_at,
        duration: pending.started.elapsed(),
        first_byte: pending.first_byte,
        forwarded: pending.forwarded,
        method: std::mem::take(&mut pending.method),
        path: std::mem::take(&mut pending.path),
        status,
        allowed: true,
        policies: std::mem::take(&mut pending.policies),
        refusal: None,
        model: pending.model.take(),
        stream: pending.stream,
        usage: summary.usage,
        prompt: pending.prompt.take().map(|prompt| {
            let connection = &slot.session.connection;
            cap(match pending.prompt_cut {
                Some(hold_back) => hooks.audit_mask_start(connection, &prompt, hold_back) + "…",
                None => hooks.audit_mask(connection, &prompt),
            })
        }),
        response: summary.answer.map(|answer| {
            cap(if pending.answer_unmasked { hooks.audit_mask(&slot.session.connection, &answer) } else { answer })
        }),
        masked: summary.masked,
        request_bytes: pending.request_bytes,
        response_bytes,
        error,
        batch: None,
    }
    .with_batch(summary.batch)
}

impl Exchange {
    /// With the usage and model of the batch results it read whole, if it did.
    fn with_batch(mut self, batch: Option<(String, warden_llm::BatchTotals)>) -> Exchange {
        if let Some((key, totals)) = batch {
            self.usage = Some(TokenUsage { input: totals.usage.input_tokens, output: totals.usage.output_tokens });
            self.model = totals.model.or(self.model);
            self.batch = Some(BatchRead { key, requests: totals.requests, unread: totals.unread });
        }
        self
    }
}

/// The record of a request warden answered itself. Its policies are what refused it: the policies (or approval)
/// when policy did, else the guard's or limit's rule.
fn refused(slot: &SessionSlot, mut pending: Pending, hooks: &dyn HttpHooks, refusal: &Refusal) -> Exchange {
    // An upstream failure or timeout was allowed by policy; anything else is a refusal by its rule.
    let allowed = matches!(refusal.rule.as_str(), "upstream" | "timeout");
    let by_policy = pending.refused_by_policy;
    let mut exchange = finish(slot, &mut pending, hooks, refusal.status.as_u16(), 0, None, Summary::default());
    exchange.allowed = allowed;
    if allowed {
        exchange.error = Some(refusal.message.clone());
    } else {
        if !by_policy {
            exchange.policies = vec![Arc::from(refusal.rule.as_str())];
        }
        exchange.refusal = Some(refusal.message.clone());
    }
    exchange
}

fn guard_refusal(refusal: &warden_llm::Refusal) -> Refusal {
    let status = if refusal.rule == "request" { StatusCode::BAD_REQUEST } else { StatusCode::FORBIDDEN };
    Refusal::new(status, refusal.rule.clone(), refusal.message.clone())
}

/// `/<connection>/<rest>` → (connection, `/<rest>`).
fn split_route(path: &str) -> Option<(&str, &str)> {
    let path = path.strip_prefix('/')?;
    let (name, rest) = match path.find('/') {
        Some(slash) => (&path[..slash], &path[slash..]),
        None => (path, "/"),
    };
    (!name.is_empty()).then_some((name, rest))
}

/// Whether a path has a `.` or `..` segment, plain or percent-encoded (`%2e`, `%2E`).
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// `Authorization: Bearer <credential>`, else an LLM SDK's own key header (`x-api-key`, `api-key`).
fn caller_credential(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()) {
        let (scheme, credential) = value.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| credential.trim().to_string()).filter(|c| !c.is_empty());
    }
    ["x-api-key", "api-key"]
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

fn copy_request_headers(from: &HeaderMap, to: &mut HeaderMap, route: &Route, inspect_response: bool) {
    for (name, value) in from {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower) || CALLER_CREDENTIALS.contains(&lower) || lower == "content-length" {
            continue;
        }
        if route.credential.as_ref().is_some_and(|(credential, _)| credential == name) {
            continue;
        }
        if inspect_response && lower == "accept-encoding" {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
    if inspect_response {
        // warden reads what it masks: no compressed answers.
        to.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    if let Some((name, value)) = &route.credential {
        to.insert(name.clone(), value.clone());
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map_or("", |value| value.split(';').next().unwrap_or("").trim())
}

/// The whole `Content-Type` (parameters too: a multipart body's boundary), empty when absent.
fn full_content_type(headers: &HeaderMap) -> &str {
    headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("")
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Reads a request body whole, refusing one over [`MAX_INSPECTED_BODY`] (413) before reading it.
async fn read_whole(incoming: Incoming, headers: &HeaderMap) -> Result<Bytes, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request",
            format!("the request body is over {} MiB, the most warden inspects", MAX_INSPECTED_BODY >> 20),
        )
    };
    if content_length(headers).is_some_and(|length| length > MAX_INSPECTED_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(incoming, MAX_INSPECTED_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => {
            Err(Refusal::new(StatusCode::BAD_REQUEST, "request", format!("reading the request body: {error}")))
        }
    }
}

/// The request body read whole, once: what an earlier check read (or rewrote), or read now, its size recorded.
async fn read_once(
    read: &mut Option<Bytes>,
    incoming: &mut Option<Incoming>,
    headers: &HeaderMap,
    pending: &mut Pending,
) -> Result<Bytes, Refusal> {
    if let Some(bytes) = read {
        return Ok(bytes.clone());
    }
    let bytes = read_whole(incoming.take().expect("a body not read yet is still incoming"), headers).await?;
    pending.request_bytes = bytes.len() as u64;
    *read = Some(bytes.clone());
    Ok(bytes)
}

/// Reads an upstream answer whole (an LLM's JSON answer), up to [`MAX_INSPECTED_BODY`].
async fn read_upstream(incoming: Incoming, connection: &str) -> Result<Bytes, Refusal> {
    match Limited::new(incoming, MAX_INSPECTED_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "upstream",
            format!("connection \"{connection}\": reading the upstream's answer: {error}"),
        )),
    }
}

fn session_header(session: &HttpSession) -> HeaderValue {
    HeaderValue::from_str(&session.id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// At most [`AUDIT_TEXT_CAP`] bytes, cut on a character boundary.
pub(crate) fn cap(mut text: String) -> String {
    if text.len() > AUDIT_TEXT_CAP {
        text.truncate(text.floor_char_boundary(AUDIT_TEXT_CAP));
        text.push('…');
    }
    text
}

/// A limit's refusal: 429 with `Retry-After`, the rule naming the limit.
fn limit_refusal(limit: crate::LimitRefusal) -> Refusal {
    Refusal {
        status: StatusCode::TOO_MANY_REQUESTS,
        rule: format!("limit:{}", limit.limit),
        message: limit.message,
        retry_after: Some(limit.retry_after),
    }
}

/// The masking failure that stopped a request body, if that is why the upstream request failed.
fn unmaskable<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a body::Unmaskable> {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(unmaskable) = cause.downcast_ref::<body::Unmaskable>() {
            return Some(unmaskable);
        }
        source = cause.source();
    }
    None
}

/// An error and its sources, for messages (hyper's own message is often just "client error (Connect)").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The compiled guard of an LLM connection.
pub(crate) fn compile_guard(target: &warden_config::HttpTarget) -> Result<warden_llm::PromptGuard, String> {
    let config = warden_llm::GuardConfig {
        deny: target.guard.deny.iter().map(|deny| (deny.id.clone(), deny.pattern.clone())).collect(),
        pii: match target.guard.prompt_pii {
            warden_config::PromptPii::Allow => warden_llm::PromptPii::Allow,
            warden_config::PromptPii::Mask => warden_llm::PromptPii::Mask,
            warden_config::PromptPii::Refuse => warden_llm::PromptPii::Refuse,
        },
        max_tokens: target.max_tokens,
        models: target.models.clone(),
    };
    warden_llm::PromptGuard::new(config).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_on_the_first_segment() {
        assert_eq!(split_route("/openai/v1/chat/completions"), Some(("openai", "/v1/chat/completions")));
        assert_eq!(split_route("/openai"), Some(("openai", "/")));
        assert_eq!(split_route("/openai/"), Some(("openai", "/")));
        assert_eq!(split_route("/"), None);
        assert_eq!(split_route("//x"), None);
    }

    #[test]
    fn dot_segments_are_found_however_written() {
        for path in ["/../admin", "/v1/./x", "/v1/..", "/%2e%2e/admin", "/%2E./x", "/.%2e"] {
            assert!(has_dot_segment(path), "{path}");
        }
        for path in ["/v1/chat/completions", "/v1/file.txt", "/..hidden", "/v1/...", "/"] {
            assert!(!has_dot_segment(path), "{path}");
        }
    }

    #[test]
    fn the_callers_credential_comes_from_bearer_or_a_key_header() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer  wk_abc "));
        assert_eq!(caller_credential(&headers).as_deref(), Some("wk_abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwdw=="));
        headers.insert("x-api-key", HeaderValue::from_static("wk_other"));
        assert_eq!(caller_credential(&headers), None, "a non-bearer Authorization is not a warden credential");
        headers.remove(header::AUTHORIZATION);
        assert_eq!(caller_credential(&headers).as_deref(), Some("wk_other"));
    }
}
