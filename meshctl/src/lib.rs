//! `meshctl`, the command line of the mesh: install and uninstall, offline injection, analysis of
//! config files, proxy status and config, and a terminal dashboard.
//!
//! It talks to the other components only through their public wire APIs. Its commands arrive with
//! their issues; until then it holds no code.
