//! `noop`: the smallest lk-go plugin. Logs where it runs and returns 0.

use lk_plugin_api::sdk::JobContext;

fn run(ctx: &JobContext) -> i32 {
    ctx.info(&format!(
        "noop plugin running job {} in room {}",
        ctx.job_id(),
        ctx.room_name()
    ));
    0
}

lk_plugin_api::export_plugin!(name: "noop", version: env!("CARGO_PKG_VERSION"), run: run);
