//! The request limits set by flags: `--max-txn-ops` and `--max-request-bytes`, which
//! kvstore takes with etcd's spelling and meaning. Both backends are started with small
//! limits and must refuse exactly what etcd refuses, with etcd's code and message.

use etcd_client::proto::{PbPutRequest, PbTxnOpRequest, PbTxnRequest, PbTxnRequestOp};
use tests::{Backend, Server, TestResult, both_backends};

both_backends!(max_txn_ops_flag, max_request_bytes_flag);

fn put_op(key: String) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
            key: key.into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        })),
    }
}

async fn max_txn_ops_flag(backend: Backend) -> TestResult {
    let server = Server::start_with(backend, &["--max-txn-ops", "4"]).await?;
    let mut raw = server.raw().await?;
    let txn = |n: usize, in_failure: bool| {
        let ops: Vec<_> = (0..n).map(|i| put_op(format!("t/{i}"))).collect();
        if in_failure {
            PbTxnRequest {
                failure: ops,
                ..Default::default()
            }
        } else {
            PbTxnRequest {
                success: ops,
                ..Default::default()
            }
        }
    };
    let ok = raw.txn(txn(4, false)).await?;
    assert!(ok.succeeded);
    assert_eq!(ok.header.unwrap().revision, 2);
    for in_failure in [false, true] {
        let err = raw.txn(txn(5, in_failure)).await.unwrap_err();
        assert_eq!(err.code, tonic::Code::InvalidArgument, "{err}");
        assert_eq!(
            err.message,
            "etcdserver: too many operations in txn request"
        );
    }
    Ok(())
}

async fn max_request_bytes_flag(backend: Backend) -> TestResult {
    let server = Server::start_with(backend, &["--max-request-bytes", "10000"]).await?;
    let mut raw = server.raw().await?;
    let put = |size: usize| PbPutRequest {
        key: b"big".to_vec(),
        value: vec![b'x'; size],
        ..Default::default()
    };
    let ok = raw.put(put(9000)).await?;
    assert_eq!(ok.header.unwrap().revision, 2);
    let err = raw.put(put(20_000)).await.unwrap_err();
    assert_eq!(err.code, tonic::Code::InvalidArgument, "{err}");
    assert_eq!(err.message, "etcdserver: request is too large");
    // Nothing was written by the refused request.
    let rev = raw.put(put(10)).await?.header.unwrap().revision;
    assert_eq!(rev, 3);
    Ok(())
}
