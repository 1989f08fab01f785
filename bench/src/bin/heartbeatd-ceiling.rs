//! `heartbeatd-ceiling`: the benchmark's physical ceiling. An actix-web server that reads the
//! body, applies heartbeatd's own parse and field checks (`heartbeat_request::parse`, with the
//! `heartbeatd-load` agents registered) and answers 200 in heartbeatd's body shape. No actors,
//! no queue, no store: whatever heartbeatd does beyond this is its own cost.

use std::collections::HashSet;
use std::net::TcpListener;

use actix_web::{web, App, HttpResponse, HttpServer};
use chrono::Utc;
use clap::Parser;
use heartbeatd::heartbeat_request;
use heartbeatd::routes::ApiResponse;

/// heartbeatd-ceiling: parse and validate heartbeats, answer 200, nothing else.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Port to listen on (127.0.0.1); 0 picks a free one, printed on stdout.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How many `load-NNNNNN` agents count as registered.
    #[arg(long, default_value_t = 10)]
    agents: usize,
    /// actix-web worker threads.
    #[arg(long, default_value_t = 1)]
    http_workers: usize,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let agents: web::Data<HashSet<String>> =
        web::Data::new((1..=args.agents).map(heartbeatd_bench::load::agent_id).collect());
    let listener = TcpListener::bind(("127.0.0.1", args.port))?;
    println!("listening on {}", listener.local_addr()?);
    HttpServer::new(move || {
        App::new().app_data(agents.clone()).route(
            "/heartbeat",
            web::post().to(|body: web::Bytes, agents: web::Data<HashSet<String>>| async move {
                match heartbeat_request::parse(&body, |id| agents.contains(id), Utc::now()) {
                    Ok(_) => HttpResponse::Ok().json(ApiResponse::new(true, "heartbeat received")),
                    Err(e) => HttpResponse::BadRequest().json(ApiResponse::new(false, e.to_string())),
                }
            }),
        )
    })
    .workers(args.http_workers)
    .listen(listener)?
    .run()
    .await
}
