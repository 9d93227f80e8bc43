//! `ork-test-certs DIR`: writes the test certificates of `ork_tests::certs`
//! into DIR, for the Python and Go SDK tests (made at test time, never
//! committed): ca.pem, server.pem/.key (localhost, 127.0.0.1),
//! client.pem/.key, other-ca.pem, other-client.pem/.key.

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: ork-test-certs DIR");
        std::process::exit(2);
    };
    ork_tests::certs::generate(std::path::Path::new(&dir));
}
