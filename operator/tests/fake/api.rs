//! A small stateful fake of the Kubernetes API over plain HTTP on loopback, for running the
//! operator binary: objects are kept by path, lists return what was stored, watches stay open
//! without events, status PATCHes merge into the stored object, and PATCHes of ConfigMaps may be made to never answer (a reconcile stays in flight). Every
//! request is logged for the test to inspect.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request the operator made.
#[derive(Clone, Debug)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Path (no query).
    pub path: String,
    /// Query string.
    pub query: String,
    /// JSON body (Null when empty or not JSON).
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    hang_configmap_patches: bool,
    objects: BTreeMap<String, Value>,
    log: Vec<Request>,
    version: u64,
}

/// The fake API server.
#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<Inner>>);

impl FakeApi {
    /// A fake whose ConfigMap PATCHes never answer, so that a reconcile stays in flight.
    pub fn hanging_reconciles() -> Self {
        let api = Self::default();
        api.0.lock().unwrap().hang_configmap_patches = true;
        api
    }

    /// Stores an object at its path (e.g. `/apis/g/v/namespaces/ns/res/name`).
    pub fn put(&self, path: &str, object: Value) {
        self.0
            .lock()
            .unwrap()
            .objects
            .insert(path.to_owned(), object);
    }

    /// The object stored at `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.get(path).cloned()
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Request> {
        self.0.lock().unwrap().log.clone()
    }

    /// Whether a request matching `f` was made.
    pub fn saw(&self, f: impl Fn(&Request) -> bool) -> bool {
        self.0.lock().unwrap().log.iter().any(f)
    }

    /// Serves on a free loopback port; returns `http://127.0.0.1:<port>`.
    pub async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    /// A kubeconfig file for `url` in `dir`.
    pub fn kubeconfig(url: &str, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"
            ),
        )
        .unwrap();
        path
    }
}

/// Splits a path into (collection path, name): `/api/v1/namespaces/ns/pods/x` → (`…/pods`, x).
fn split(path: &str) -> (String, Option<String>) {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let prefix = if segs.first() == Some(&"api") { 2 } else { 3 };
    let rest = &segs[prefix.min(segs.len())..];
    let collection_len = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        3
    } else {
        1
    };
    if rest.len() > collection_len {
        let cut = prefix + collection_len;
        (
            format!("/{}", segs[..cut].join("/")),
            Some(segs[cut..].join("/")),
        )
    } else {
        (path.to_owned(), None)
    }
}

/// The resource name of a collection path (`…/pods` → `pods`) and its group/version prefix.
fn resource_of(collection: &str) -> (String, String) {
    let segs: Vec<&str> = collection.trim_matches('/').split('/').collect();
    let prefix = if segs.first() == Some(&"api") { 2 } else { 3 };
    (
        segs[..prefix.min(segs.len())].join("/"),
        segs.last().copied().unwrap_or_default().to_owned(),
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        serde_json::to_vec(&body).unwrap(),
    )
        .into_response()
}

fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

async fn handle(State(api): State<FakeApi>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    api.0.lock().unwrap().log.push(Request {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
    });
    if path == "/version" {
        return json_response(
            StatusCode::OK,
            json!({"major": "1", "minor": "30", "gitVersion": "v1.30.0", "gitCommit": "",
                   "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "gc",
                   "platform": "linux/amd64"}),
        );
    }
    if query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1")
    {
        // A watch that never reports anything.
        let stream = futures_util::stream::pending::<Result<Bytes, Infallible>>();
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            Body::from_stream(stream),
        )
            .into_response();
    }
    match respond(&api, &method, path, body) {
        Some(response) => response,
        None => {
            // A reconcile in flight, for ever.
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

/// The answer, or `None` for a request that never gets one.
fn respond(api: &FakeApi, method: &Method, path: String, body: Value) -> Option<Response> {
    let (collection, name) = split(&path);
    let mut inner = api.0.lock().unwrap();
    inner.version += 1;
    let rv = inner.version.to_string();
    Some(match (method.as_str(), name) {
        ("GET", None) => {
            let (gv, resource) = resource_of(&collection);
            let namespaced = collection.contains("/namespaces/");
            let items: Vec<Value> = inner
                .objects
                .iter()
                .filter(|(p, _)| {
                    let (c, n) = split(p);
                    n.is_some()
                        && resource_of(&c) == (gv.clone(), resource.clone())
                        && (!namespaced || c == collection)
                })
                .map(|(_, o)| o.clone())
                .collect();
            json_response(
                StatusCode::OK,
                json!({"kind": "List", "apiVersion": "v1",
                       "metadata": {"resourceVersion": rv}, "items": items}),
            )
        }
        ("GET", Some(_)) => match inner.objects.get(&path) {
            Some(o) => json_response(StatusCode::OK, o.clone()),
            None => not_found(),
        },
        ("POST", None) => {
            let mut object = body;
            object["metadata"]["resourceVersion"] = json!(rv);
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or("x")
                .to_owned();
            inner
                .objects
                .insert(format!("{collection}/{name}"), object.clone());
            json_response(StatusCode::CREATED, object)
        }
        ("PUT", Some(_)) => {
            let mut object = body;
            object["metadata"]["resourceVersion"] = json!(rv);
            inner.objects.insert(path, object.clone());
            json_response(StatusCode::OK, object)
        }
        ("PATCH", Some(_))
            if inner.hang_configmap_patches && collection.ends_with("/configmaps") =>
        {
            return None;
        }
        ("PATCH", Some(name)) if name.ends_with("/status") => {
            // The status subresource: merged into the stored object, which is returned whole.
            let parent = path.trim_end_matches("/status").to_owned();
            let mut object = inner.objects.get(&parent).cloned().unwrap_or(json!({}));
            object["status"] = body["status"].clone();
            object["metadata"]["resourceVersion"] = json!(rv);
            inner.objects.insert(parent, object.clone());
            json_response(StatusCode::OK, object)
        }
        ("PATCH", Some(_)) => {
            let mut object = body;
            object["metadata"]["resourceVersion"] = json!(rv);
            inner.objects.insert(path, object.clone());
            json_response(StatusCode::OK, object)
        }
        _ => not_found(),
    })
}
