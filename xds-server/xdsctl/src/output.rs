//! Writing results to stdout: the command's table or text, or with `-o json` the response as JSON
//! (the generated messages' serde derive; `events` writes one object per line).

use xds_admin_api as pb;

use crate::cli::Output;
use crate::failure::Failure;
use crate::render::events::event_line;

/// Writes to stdout; a closed pipe (`xdsctl ... | head`) ends the program quietly.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("xdsctl: writing the output: {e}");
        std::process::exit(1);
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("admin messages serialize")
}

/// A response: pretty JSON, or the text `table` makes of it.
pub fn print_out<T: serde::Serialize>(
    out: Output,
    value: &T,
    table: fn(&T) -> String,
) -> Result<(), Failure> {
    match out {
        Output::Json => emit(&format!("{}\n", json(value))),
        Output::Table => emit(&table(value)),
    }
    Ok(())
}

/// One event, one line: a compact JSON object, or [`event_line`].
pub fn print_event(out: Output, e: &pb::Event) {
    match out {
        Output::Json => emit(&format!(
            "{}\n",
            serde_json::to_string(e).expect("serialize")
        )),
        Output::Table => emit(&format!("{}\n", event_line(e))),
    }
}
