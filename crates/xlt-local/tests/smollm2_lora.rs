//! LoRA on the real SmolLM2-135M-Instruct (part 1's Q4_1 GGUF fixture, dequantized to f32,
//! fetched by `scripts/fetch-smollm2`; the test fails, it does not skip, without it): a few
//! steps on a handful of multiple-choice questions lower the training loss and raise the
//! correct letters' first-token log-probabilities on those questions.

use std::ops::ControlFlow;
use std::path::PathBuf;

use xlt_local::{
    DType, LoadOptions, LocalModel, LoraConfig, ModelSource, Ops, TrainConfig, TrainExample,
    attach_lora, encode_example, train,
};
use xlt_provider::{ChatMessage, Role};

/// The GGUF file (`scripts/fetch-smollm2`).
fn gguf() -> PathBuf {
    xlt_local::testing::smollm2_gguf()
}

/// Global-MMLU-style questions (English and German) and their answers.
const QUESTIONS: [(&str, &str); 3] = [
    (
        "Which of the following is a prime number?\nA. 21\nB. 27\nC. 29\nD. 33\nAnswer with the letter only.",
        "C",
    ),
    (
        "Welches Organ pumpt das Blut durch den Körper?\nA. Das Herz\nB. Die Leber\nC. Die Lunge\nD. Die Niere\nAntworte nur mit dem Buchstaben.",
        "A",
    ),
    (
        "What is the chemical symbol for sodium?\nA. So\nB. Sd\nC. S\nD. Na\nAnswer with the letter only.",
        "D",
    ),
];

/// The log-probability of each question's correct letter as the first answer token.
fn letter_logprobs(model: &LocalModel) -> Vec<f32> {
    let prompts: Vec<Vec<u32>> = QUESTIONS
        .iter()
        .map(|(q, _)| {
            model
                .encode_chat(&[ChatMessage::new(Role::User, *q)])
                .unwrap()
        })
        .collect();
    let logprobs = model.next_token_logprobs(&prompts).unwrap();
    QUESTIONS
        .iter()
        .zip(&logprobs)
        .map(|((_, letter), lp)| lp[model.tokenizer().token_to_id(letter).unwrap() as usize])
        .collect()
}

#[test]
fn a_few_lora_steps_on_smollm2_lower_the_loss_and_raise_the_right_letters() {
    let options = LoadOptions {
        dtype: DType::F32,
        ops: Ops::Differentiable,
        ..LoadOptions::default()
    };
    let mut model = LocalModel::load(&ModelSource::Gguf(gguf()), &options).unwrap();
    let before = letter_logprobs(&model);
    let examples: Vec<TrainExample> = QUESTIONS
        .iter()
        .map(|(q, a)| {
            encode_example(
                model.tokenizer(),
                model.template(),
                &[
                    ChatMessage::new(Role::User, *q),
                    ChatMessage::new(Role::Assistant, *a),
                ],
            )
            .unwrap()
        })
        .collect();
    let lora = LoraConfig {
        r: 8,
        lora_alpha: 16.0,
        lora_dropout: 0.0,
        target_modules: vec!["q_proj".into(), "v_proj".into()],
        ..LoraConfig::default()
    };
    attach_lora(model.model_mut(), &lora, 0).unwrap();
    let config = TrainConfig {
        learning_rate: 1e-3,
        epochs: 4,
        batch_size: 3,
        warmup_ratio: 0.0,
        ..TrainConfig::default()
    };
    let reports = train(model.model_mut(), &examples, &config, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(reports.len(), 4);
    let (first, last) = (reports[0].loss, reports[3].loss);
    assert!(last < first, "training loss {first} -> {last}");
    let after = letter_logprobs(&model);
    for (((q, _), b), a) in QUESTIONS.iter().zip(&before).zip(&after) {
        assert!(a > b, "{q:?}: the right letter's logprob {b} -> {a}");
    }
}
