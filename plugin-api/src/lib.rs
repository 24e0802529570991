//! lk-go's plugin interface: the versioned C ABI and the safe Rust SDK.
//!
//! Owns: [`abi`], the `#[repr(C)]` mirror of `include/lk_plugin.h` (the
//! contract for C, Go and every other language), and the safe wrapper Rust
//! plugins use: [`sdk`] (the job, events, hooks; [`export_plugin!`] declares
//! a plugin), [`media`] (audio in and out, data packets, attributes),
//! [`stream`] (data streams, transcripts) and [`rpc`].
//!
//! Must not touch: anything of the host. This crate knows nothing of rooms,
//! WebRTC, tokio or the loader; it is compiled into third-party plugins and
//! its only dependency besides `std` is `crossbeam-channel` (the channels of
//! [`media`], so a plugin thread can `select!` over audio, data, events and
//! shutdown).
//!
//! ```no_run
//! use lk_plugin_api::sdk::JobContext;
//!
//! fn run(ctx: &JobContext) -> i32 {
//!     ctx.info(&format!("hello from room {}", ctx.room_name()));
//!     0
//! }
//!
//! lk_plugin_api::export_plugin!(name: "hello", version: "0.1.0", run: run);
//! ```

pub mod abi;
pub mod media;
pub mod rpc;
pub mod sdk;
pub mod stream;

/// Declares the plugin: exports `lk_plugin_entry` returning a static
/// descriptor at this crate's ABI version, with `run` wrapped in the panic
/// barrier. `run` is a `fn(&JobContext) -> i32`; its value becomes the
/// process exit code.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, version: $version:expr, run: $run:path $(,)?) => {
        #[doc(hidden)]
        unsafe extern "C" fn __lk_plugin_run(
            api: *const $crate::abi::LkHostApi,
            job: *const $crate::abi::LkJob,
        ) -> i32 {
            $crate::sdk::__run_plugin(api, job, $run)
        }

        #[doc(hidden)]
        static __LK_PLUGIN_DESCRIPTOR: $crate::abi::LkPluginDescriptor =
            $crate::abi::LkPluginDescriptor {
                magic: $crate::abi::LK_PLUGIN_MAGIC,
                abi_major: $crate::abi::LK_ABI_MAJOR,
                abi_minor: $crate::abi::LK_ABI_MINOR,
                name: $crate::abi::LkStr::from_static($name),
                version: $crate::abi::LkStr::from_static($version),
                run: Some(__lk_plugin_run),
            };

        /// The plugin's entry point (see `lk_plugin.h`).
        #[no_mangle]
        pub extern "C" fn lk_plugin_entry() -> *const $crate::abi::LkPluginDescriptor {
            &__LK_PLUGIN_DESCRIPTOR
        }
    };
}
