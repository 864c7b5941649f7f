//! The mesh's certificate authority: a gRPC server compatible with Istio's
//! `IstioCertificateService` that signs short-lived SPIFFE certificates, and the client library the
//! proxy uses to obtain and rotate them.
//!
//! The CA never trusts the identity a CSR asks for, only the authenticated caller. Its server and
//! client arrive with issue 4; until then it holds no code.
