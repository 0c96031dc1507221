//! A component as the Spin Rust SDK's README writes one (`#[http_component]`),
//! built for wasm32-wasip2 and run on alorig-host unmodified. `/` answers 200;
//! `/fetch?url=U` sends `GET U` with `spin_sdk::http::send` and answers
//! `status=N` or `error=<the SendError>`.

use spin_sdk::{
    http::{IntoResponse, Method, Request, Response, SendError},
    http_component,
};

#[http_component]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let (path, query) = req
        .path_and_query()
        .unwrap_or("/")
        .split_once('?')
        .unwrap_or((req.path(), ""));
    let text = if path == "/fetch" {
        let url = query.strip_prefix("url=").unwrap_or("http://127.0.0.1:9/");
        let outgoing = Request::builder().method(Method::Get).uri(url).build();
        match spin_sdk::http::send::<_, Response>(outgoing).await {
            Ok(response) => format!("status={}", response.status()),
            Err(SendError::Http(code)) => format!("error={code:?}"),
            Err(other) => format!("error={other}"),
        }
    } else {
        "hello from a plain Spin SDK component\n".to_string()
    };
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(text)
        .build())
}
