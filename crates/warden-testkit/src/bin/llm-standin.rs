//! `llm-standin`: the test kit's LLM provider stand-in ([`warden_testkit::llm::LlmStandIn`]) as a process, for
//! benchmarks and manual runs. It prints `listening on http://ADDR` once it accepts connections and serves until
//! it is killed (or gets Ctrl-C).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use warden_testkit::llm::{LlmStandIn, LlmStandInOptions};

const USAGE: &str = "usage: llm-standin [--listen ADDR] [--openai-key KEY] [--anthropic-key KEY] [--answer TEXT]
                   [--chunk-bytes N] [--chunk-delay-ms MS] [--first-delay-ms MS] [--workers N]

  --listen ADDR        the address to serve on (default 127.0.0.1:0: a free loopback port)
  --openai-key KEY     expected as `Authorization: Bearer KEY` (default sk-upstream-openai-test)
  --anthropic-key KEY  expected as `x-api-key: KEY` (default sk-ant-upstream-test)
  --answer TEXT        the text every generation answers (default: the test kit's DEFAULT_ANSWER)
  --chunk-bytes N      streamed deltas of about N bytes; 0 for one delta (default 6)
  --chunk-delay-ms MS  the pause between streamed deltas (default 0)
  --first-delay-ms MS  the pause before the first delta, or before a non-streamed answer (default 0)
  --workers N          tokio worker threads (default: one per core)";

struct Arguments {
    listen: SocketAddr,
    workers: Option<usize>,
    options: LlmStandInOptions,
}

/// The arguments; `Ok(None)` for `--help`.
fn parse(arguments: impl IntoIterator<Item = String>) -> Result<Option<Arguments>, String> {
    let mut parsed = Arguments {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        workers: None,
        // Nobody can read the records of a process, so it keeps none: memory stays flat through a benchmark.
        options: LlmStandInOptions { record_requests: false, ..LlmStandInOptions::default() },
    };
    let mut arguments = arguments.into_iter();
    while let Some(flag) = arguments.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        const FLAGS: [&str; 8] = [
            "--listen",
            "--openai-key",
            "--anthropic-key",
            "--answer",
            "--chunk-bytes",
            "--chunk-delay-ms",
            "--first-delay-ms",
            "--workers",
        ];
        if !FLAGS.contains(&flag.as_str()) {
            return Err(format!("unknown argument {flag:?}"));
        }
        let value = arguments.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |value: &str| value.parse::<u64>().map_err(|_| format!("{flag}: {value:?} is not a number"));
        match flag.as_str() {
            "--listen" => parsed.listen = value.parse().map_err(|_| format!("--listen: {value:?} is not ADDR:PORT"))?,
            "--openai-key" => parsed.options.openai_key = value,
            "--anthropic-key" => parsed.options.anthropic_key = value,
            "--answer" => parsed.options.answer = value,
            "--chunk-bytes" => parsed.options.chunk_bytes = number(&value)? as usize,
            "--chunk-delay-ms" => parsed.options.chunk_delay = Duration::from_millis(number(&value)?),
            "--first-delay-ms" => parsed.options.first_delay = Duration::from_millis(number(&value)?),
            "--workers" => parsed.workers = Some(number(&value)?.max(1) as usize),
            _ => unreachable!("every flag in FLAGS has an arm"),
        }
    }
    Ok(Some(parsed))
}

fn main() -> ExitCode {
    let arguments = match parse(std::env::args().skip(1)) {
        Ok(Some(arguments)) => arguments,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(problem) => {
            eprintln!("llm-standin: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = arguments.workers {
        runtime.worker_threads(workers);
    }
    let runtime = runtime.enable_all().build().expect("build the tokio runtime");
    runtime.block_on(async move {
        let standin = match LlmStandIn::bind(arguments.listen, arguments.options).await {
            Ok(standin) => standin,
            Err(error) => {
                eprintln!("llm-standin: cannot listen on {}: {error}", arguments.listen);
                return ExitCode::FAILURE;
            }
        };
        println!("listening on {}", standin.base_url());
        // Until killed; Ctrl-C ends it cleanly.
        let _ = tokio::signal::ctrl_c().await;
        ExitCode::SUCCESS
    })
}
