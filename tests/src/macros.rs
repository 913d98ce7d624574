//! The `both_backends!` macro: one test body, one `#[tokio::test]` per backend.

/// For each named `async fn NAME(backend: Backend) -> anyhow::Result<()>` in the calling
/// test file, generates `mod NAME { fn etcd(); fn kvstore(); }` test functions, so test
/// names read `NAME::etcd` and `NAME::kvstore`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn etcd() {
                    $crate::report::run_test(concat!(stringify!($name), "::etcd"), super::$name($crate::Backend::Etcd)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn kvstore() {
                    $crate::report::run_test(concat!(stringify!($name), "::kvstore"), super::$name($crate::Backend::Kvstore)).await;
                }
            }
        )*
    };
}
