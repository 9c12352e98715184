pub mod verify;
#[cfg(test)]
mod verify_tests;
