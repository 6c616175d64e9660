//! A local server speaking OpenAI's chat completions wire format, recording
//! every request: the real OpenAI provider is pointed at it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Clone, Default)]
pub struct FakeOpenAi {
    pub requests: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl FakeOpenAi {
    /// Starts the server; returns it and its base URL (`http://addr/v1`).
    pub async fn start() -> (Self, String) {
        let fake = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let f = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let f = f.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let f = f.clone();
                        async move { Ok::<_, Infallible>(f.answer(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (fake, format!("http://{addr}/v1"))
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let path = req.uri().path().to_string();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        self.requests
            .lock()
            .unwrap()
            .push((auth.clone(), json.clone()));
        if path != "/v1/chat/completions" {
            return resp(
                404,
                "application/json",
                r#"{"error":{"message":"not found","type":"invalid_request_error"}}"#.into(),
            );
        }
        if !auth.starts_with("Bearer ") {
            return resp(401, "application/json", r#"{"error":{"message":"no key","type":"invalid_request_error","code":"invalid_api_key"}}"#.into());
        }
        let last = json["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_string();
        let reply = format!("fake says: {last}");
        let model = json["model"].as_str().unwrap_or("gpt-test").to_string();
        if json["stream"].as_bool() == Some(true) {
            let mut out = String::new();
            for word in reply.split_inclusive(' ') {
                let chunk = serde_json::json!({"id":"c1","object":"chat.completion.chunk","model":model,
                    "choices":[{"index":0,"delta":{"content":word},"finish_reason":null}]});
                out.push_str(&format!("data: {chunk}\n\n"));
            }
            let fin = serde_json::json!({"id":"c1","object":"chat.completion.chunk","model":model,
                "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]});
            out.push_str(&format!("data: {fin}\n\n"));
            // The usage chunk comes late, with empty choices, as OpenAI sends it.
            let usage = serde_json::json!({"id":"c1","object":"chat.completion.chunk","model":model,"choices":[],
                "usage":{"prompt_tokens":42,"completion_tokens":7,"total_tokens":49}});
            out.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
            return resp(200, "text/event-stream", out);
        }
        let body = serde_json::json!({"id":"c1","object":"chat.completion","model":model,
            "choices":[{"index":0,"message":{"role":"assistant","content":reply},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":42,"completion_tokens":7,"total_tokens":49}});
        resp(200, "application/json", body.to_string())
    }

    pub fn requests(&self) -> Vec<(String, serde_json::Value)> {
        self.requests.lock().unwrap().clone()
    }
}

fn resp(status: u16, ct: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ct)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}
