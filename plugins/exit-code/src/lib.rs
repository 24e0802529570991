//! `exit-code`: returns the integer given as job metadata (`--metadata 42`),
//! so tests can check that the plugin's code becomes the process exit code.
//! Metadata that is not an integer is reported and gives 1.

use lk_plugin_api::sdk::JobContext;

fn run(ctx: &JobContext) -> i32 {
    let raw = ctx.metadata().trim();
    match raw.parse::<i32>() {
        Ok(code) => {
            ctx.info(&format!("exit-code plugin returning {code}"));
            code
        }
        Err(_) => {
            ctx.error(&format!(
                "exit-code plugin needs an integer as job metadata, got {raw:?}"
            ));
            1
        }
    }
}

lk_plugin_api::export_plugin!(name: "exit-code", version: env!("CARGO_PKG_VERSION"), run: run);
