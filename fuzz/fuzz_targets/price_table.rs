//! Price tables as an operator uploads them (`fjord ctl licence
//! price-table load FILE`, TOML): the parser and its validation never
//! panic, and a table they accept prices any number of licences and
//! prints any amount without overflow.
#![no_main]

use fjord_control_plane::billing::decimal;
use fjord_control_plane::licensing::PriceTable;
use fjord_fuzz::Script;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut s = Script::new(data);
    let licences = u64::from(s.u16()) << (s.byte() % 48);
    let minor = i64::from_be_bytes(std::array::from_fn(|_| s.byte()));
    let Ok(text) = std::str::from_utf8(s.rest()) else {
        return;
    };
    if let Ok(table) = PriceTable::from_toml(text) {
        table.validate().expect("an accepted table validates");
        let fee = table.staff_licences_minor(licences);
        assert!(
            fee >= table.staff_licences_minor(licences / 2),
            "more licences cost less"
        );
        let _ = decimal(minor, table.minor_unit_digits);
    }
});
