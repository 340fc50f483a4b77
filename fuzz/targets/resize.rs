//! Fuzz target: the resize pipeline over arbitrary bytes, in every input format the sniffer
//! knows (JPEG, PNG, GIF, WebP), through [`probe`] (the node's admission) and
//! [`Pipeline::process`] (a worker's job), with one `Pipeline` kept across executions as a
//! worker keeps it.
//!
//! Input: one selector byte (output format, fit, box, progressive; see
//! `tessera_fuzz::resize_options`) then the image bytes. The limits are the production
//! shape with smaller numbers (`tessera_fuzz::resize_limits`), so one execution stays in
//! milliseconds and a slow input means a real hang.
//!
//! Properties beyond "no panic": whatever `probe` refuses, the pipeline refuses with the
//! same code (the node must not admit what the worker refuses from the header, nor refuse
//! what it would serve); whatever the pipeline serves, `probe` admitted, with the same input
//! format and output size, and the output fits the limits. The same bytes through
//! `tessera_resize::info` (the node's `/v1/info`): no panic, and what it reads is what
//! `probe` of its small decode admitted (same format), with a size within the limits.

use tessera_resize::{probe, InfoBuffers, Pipeline};

fn main() {
    let limits = tessera_fuzz::resize_limits();
    let mut pipeline = Pipeline::new(limits.clone());
    let mut info_buffers = InfoBuffers::default();
    afl::fuzz!(|data: &[u8]| {
        let Some((&selector, image)) = data.split_first() else {
            return;
        };
        let options = tessera_fuzz::resize_options(selector);
        let probed = probe(image, &options, &limits);
        let served = pipeline.process(image, &options);
        tessera_fuzz::check_resize(&probed, &served, &limits);
        if let Ok(read) = tessera_resize::info(image, &limits, &mut info_buffers, &|| false) {
            let admitted = tessera_resize::info::probe(image, &limits)
                .expect("info read what its probe refuses");
            assert_eq!(admitted.input_format, read.format);
            assert!(u64::from(read.width) * u64::from(read.height) <= limits.pixels_max);
        }
    });
}
