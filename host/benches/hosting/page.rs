//! Section 6: a page made from one PostgreSQL query and one Redis GET (the
//! `page-bench` guest), through alorig-host vs a native hyper + sqlx + redis
//! server answering the same bytes from the same database and keys.

use super::{print_load_header, print_load_row, wrk};
use crate::{
    harness::{Host, manifest},
    postgres_server::PgServer,
    redis_server::RedisServer,
};
use std::net::SocketAddr;

const QUERY: &str = "SELECT name, price::text FROM products WHERE id = $1";
const PRODUCT: i32 = 42;
/// The app's pool size, used for the native pool too.
const POOL: u32 = 8;

pub fn page(seconds: u32) {
    println!(
        "\n## 6. a page with one PostgreSQL query and one Redis GET, end to end (wrk, {seconds} s per row)\n"
    );
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let host = Host::up_full(
        &[(
            "page",
            manifest(
                "page",
                "page-bench",
                &format!(
                    "[resources]\nmax_concurrency = 1000\ninstance_reuse = 1000\n[[routes]]\nhost = \"page.localhost\"\n\
                     [postgres]\ndatabase = \"page_db\"\nmax_connections = {POOL}\n[redis]\ndb = 3\nprefix = \"page:\""
                ),
            ),
        )],
        "",
        &[
            ("ALORIG_POSTGRES_URL", &pg.admin_url()),
            ("ALORIG_REDIS_URL", &redis.url()),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let setup = runtime.block_on(host.request("POST", "page.localhost", "/setup", Vec::new()));
    assert_eq!(setup.status, 200, "page setup: {}", setup.text());
    let path = format!("/p/{PRODUCT}");
    let ours_body = runtime.block_on(host.get("page.localhost", &path)).text();

    let native = start_native(pg.url_for("page_db"), format!("{}/3", redis.url()));
    let native_body = runtime.block_on(get_body(native, &path));
    assert_eq!(
        ours_body, native_body,
        "the host and the native server must answer the same bytes"
    );

    println!(
        "Both read product {PRODUCT} from PostgreSQL (pool of {POOL}) and its stock from Redis; the host's app reuses instances (`instance_reuse = 1000`).\n"
    );
    print_load_header();
    for connections in [1, 32] {
        let base = wrk(native, "page.localhost", &path, connections, seconds);
        let ours = wrk(host.ingress, "page.localhost", &path, connections, seconds);
        print_load_row(
            connections,
            "native hyper + sqlx + redis",
            &base,
            &base,
            None,
        );
        print_load_row(connections, "alorig-host, page-bench", &ours, &base, None);
    }
}

/// A one-shot GET over a plain TCP connection (no client library needed).
pub async fn get_body(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: page.localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The same page natively: hyper, an sqlx pool and one multiplexed Redis
/// connection.
fn start_native(database_url: String, redis_url: String) -> SocketAddr {
    super::start_native(|| async move {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(POOL)
            .connect(&database_url)
            .await
            .unwrap();
        let redis = redis::Client::open(redis_url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        move |request: hyper::Request<hyper::body::Incoming>| {
            let (pool, mut redis) = (pool.clone(), redis.clone());
            async move {
                let id: i32 = request
                    .uri()
                    .path()
                    .trim_start_matches("/p/")
                    .parse()
                    .unwrap_or(0);
                let (name, price): (String, String) = sqlx::query_as(QUERY)
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                let stock: Option<String> =
                    redis::AsyncCommands::get(&mut redis, format!("page:stock:{id}"))
                        .await
                        .unwrap();
                let body = format!(
                    "{{\"id\":{id},\"name\":\"{name}\",\"price\":\"{price}\",\"stock\":{}}}\n",
                    stock.unwrap_or_else(|| "0".into())
                );
                hyper::Response::builder()
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap()
            }
        }
    })
}
