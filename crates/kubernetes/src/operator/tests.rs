//! Each reconciler against a mocked API server.
