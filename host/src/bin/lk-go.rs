//! The `lk-go` command. All logic lives in the library (`lk_go::cli`).

fn main() {
    lk_go::cli::exit(lk_go::cli::main());
}
