//! `panic`: panics inside `run`, to show that a plugin panic is caught at the
//! C boundary, logged as one line and reported as exit code 70.

use lk_plugin_api::sdk::JobContext;

fn run(ctx: &JobContext) -> i32 {
    ctx.info("panic plugin about to panic");
    panic!(
        "the panic plugin panics on purpose in room {}",
        ctx.room_name()
    );
}

lk_plugin_api::export_plugin!(name: "panic", version: env!("CARGO_PKG_VERSION"), run: run);
