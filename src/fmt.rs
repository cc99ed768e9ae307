//! The crate's log shim, in the style of smoltcp's and embassy's `fmt.rs`.
//!
//! `trace!`, `debug!` and `warn!` take a defmt format string and its
//! arguments. With the `defmt` feature they forward to the `defmt` macros of
//! the same name (so `DEFMT_LOG` filters them at compile time). Without it
//! they expand to `let _ = (&arg, ...);`: the arguments count as used, so
//! there are no unused-variable warnings, nothing is formatted and no code is
//! generated. Arguments must therefore be plain places or cheap, side-effect
//! free expressions.
#[collapse_debuginfo(yes)]
macro_rules! trace {
    ($s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        ::defmt::trace!($s $(, $x)*);
        #[cfg(not(feature = "defmt"))]
        let _ = ($(&$x),*);
    }};
}

#[collapse_debuginfo(yes)]
macro_rules! debug {
    ($s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        ::defmt::debug!($s $(, $x)*);
        #[cfg(not(feature = "defmt"))]
        let _ = ($(&$x),*);
    }};
}

#[collapse_debuginfo(yes)]
macro_rules! warn {
    ($s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        ::defmt::warn!($s $(, $x)*);
        #[cfg(not(feature = "defmt"))]
        let _ = ($(&$x),*);
    }};
}
