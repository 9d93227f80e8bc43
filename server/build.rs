//! Rebuilds the crate when the web UI's built files change: `ui.rs` embeds
//! every file of `ui/dist/`, and a file added there is not one the compiler
//! already tracks.

fn main() {
    println!("cargo:rerun-if-changed=../ui/dist");
}
