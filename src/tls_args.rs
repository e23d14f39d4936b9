//! `--ca`, `--cert`, `--key` (or `FJORD_CA`, `FJORD_CERT`, `FJORD_KEY`):
//! the TLS files every client and server command takes.

use std::path::PathBuf;

use clap::Args;
use fjord_common::TlsFiles;

#[derive(Args, Clone, Debug)]
pub struct TlsArgs {
    /// Cluster CA certificate (PEM) that servers and clients are verified against.
    #[arg(long, env = "FJORD_CA")]
    pub ca: Option<PathBuf>,
    /// This process's certificate (PEM), issued by `fjord pki issue ...`.
    #[arg(long, env = "FJORD_CERT")]
    pub cert: Option<PathBuf>,
    /// The key of --cert (PEM).
    #[arg(long, env = "FJORD_KEY")]
    pub key: Option<PathBuf>,
}

/// What is missing, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum TlsArgsError {
    #[error("no CA certificate: give --ca FILE or set FJORD_CA (`fjord dev` prints the export lines; `fjord pki init` makes a CA)")]
    NoCa,
    #[error("no client certificate: give --cert FILE and --key FILE, or set FJORD_CERT and FJORD_KEY (`fjord pki issue operator --name NAME --dir DIR` makes one)")]
    NoCert,
    #[error("--cert needs --key (FJORD_KEY) and --key needs --cert (FJORD_CERT)")]
    HalfPair,
    #[error(transparent)]
    Tls(#[from] fjord_common::TlsError),
}

impl TlsArgs {
    /// The files, checked now: a certificate is required when `need_cert`.
    pub fn files(&self, need_cert: bool) -> Result<TlsFiles, TlsArgsError> {
        let ca = self.ca.clone().ok_or(TlsArgsError::NoCa)?;
        let files = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => TlsFiles::with_cert(ca, c, k),
            (None, None) if need_cert => return Err(TlsArgsError::NoCert),
            (None, None) => TlsFiles::anonymous(ca),
            _ => return Err(TlsArgsError::HalfPair),
        };
        files.validate()?;
        Ok(files)
    }
}
