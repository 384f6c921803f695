//! `roster-nemesis`: the real binary under real faults (`roster_tests::nemesis::cli`).

#[cfg(not(madsim))]
fn main() {
    roster_tests::nemesis::cli::main()
}

#[cfg(madsim)]
fn main() {
    eprintln!("roster-nemesis runs real processes in network namespaces: build it without --cfg madsim");
    std::process::exit(2);
}
