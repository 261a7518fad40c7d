//! S3's protocol limits, in one leaf module: the journal checks part numbers against
//! them, the uploaders size parts by them, and the S3 client bounds its listing by them.

/// The most parts a multipart upload may have (S3's limit).
pub const MAX_PARTS: u32 = 10_000;
