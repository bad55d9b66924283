//! AfriMMLU, Belebele and MMMLU read into the same questions as Global-MMLU, on the shipped
//! rows: ids, both column orders, typed errors with file and row, the whole-file alignment
//! audit on AfriMMLU's misordered English test split, and `prepare` on each.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use xlt_data::{
    AnswerLetter, Benchmark, DataError, DataSource, Domain, DomainScheme, Language, LoadOptions,
    PrepareConfig, Prepared, Selection, load_file, load_file_as, load_paths, load_sources, prepare,
};

fn afrimmlu(name: &str) -> PathBuf {
    common::fixtures().join("afrimmlu").join(name)
}

fn langs(codes: &str) -> Vec<Language> {
    Language::parse_list(codes).unwrap()
}

fn config(languages: &str, domains: &[Domain], scheme: DomainScheme) -> PrepareConfig {
    PrepareConfig {
        selection: Selection {
            languages: langs(languages),
            domains: domains.to_vec(),
            ..Selection::default()
        },
        domain_scheme: scheme,
        ..PrepareConfig::default()
    }
}

/// Every language of a prepared experiment trains and tests on the same ids, none on both
/// sides, and the files are written with the manifest.
fn assert_aligned_and_clean(prepared: &Prepared) {
    let m = &prepared.manifest;
    assert!(m.leakage().is_clean(), "{:?}", m.leakage());
    type Sides<'a> = Vec<(&'a Vec<String>, &'a Vec<String>)>;
    let mut by_domain: BTreeMap<Domain, Sides<'_>> = BTreeMap::new();
    for s in &m.slices {
        by_domain
            .entry(s.domain)
            .or_default()
            .push((&s.train_ids, &s.test_ids));
        assert!(!s.train_ids.is_empty() && !s.test_ids.is_empty(), "{s:?}");
    }
    for (domain, sides) in by_domain {
        for pair in sides.windows(2) {
            assert_eq!(pair[0], pair[1], "{domain}: languages differ in their ids");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    prepared.write_to(dir.path()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["slices"].as_array().unwrap().len(), m.slices.len());
}

#[test]
fn afrimmlu_reads_both_column_orders_with_ids_by_subject() {
    let dev = load_file(&afrimmlu("ibo.dev.tsv"), None).unwrap();
    let test = load_file(&afrimmlu("ibo.test.tsv"), None).unwrap();
    assert_eq!((dev.len(), test.len()), (25, 500));
    assert!(
        dev.iter()
            .chain(&test)
            .all(|q| q.language == Language::Igbo)
    );
    // dev: subject first; test: subject last. Ids count within each subject.
    assert_eq!(dev[0].sample_id, format!("{}/dev/0", dev[0].subject));
    assert_eq!(test[0].sample_id, format!("{}/test/0", test[0].subject));
    let per_subject = test.iter().filter(|q| q.subject == "global_facts").count();
    assert_eq!(per_subject, 100);
    assert!(test.iter().any(|q| q.sample_id == "global_facts/test/99"));
    assert_eq!(
        test.iter()
            .find(|q| q.subject == "global_facts")
            .unwrap()
            .domain,
        Domain::Other
    );
    // Answer counts of the release (SOURCE: A 103, B 129, C 138, D 130).
    let mut counts = [0; 4];
    for q in &test {
        counts[q.answer.index()] += 1;
    }
    assert_eq!(counts, [103, 129, 138, 130], "answer counts");
    // A choices literal with a double-quoted entry (an apostrophe inside) reads as four
    // options, none of them carrying quotes or brackets.
    for q in dev.iter().chain(&test) {
        for o in &q.options {
            assert!(
                !o.starts_with('\'') && !o.starts_with('['),
                "{}: {o}",
                q.sample_id
            );
        }
    }
    let apostrophes = test
        .iter()
        .flat_map(|q| q.options.iter())
        .filter(|o| o.contains('\''))
        .count();
    assert!(
        apostrophes > 0,
        "some Igbo options hold an apostrophe: {apostrophes}"
    );
}

#[test]
fn afrimmlu_bad_cells_name_the_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(afrimmlu("yor.dev.tsv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<&str> = lines[0].split('\t').collect();
    let choices = header.iter().position(|h| *h == "choices").unwrap();
    let answer = header.iter().position(|h| *h == "answer").unwrap();
    let write = |name: &str, row: usize, col: usize, value: &str| -> PathBuf {
        let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        let mut cells: Vec<String> = out[row].split('\t').map(str::to_owned).collect();
        cells[col] = value.to_owned();
        out[row] = cells.join("\t");
        let path = dir.path().join(name);
        std::fs::write(&path, out.join("\n") + "\n").unwrap();
        path
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            write("yor.dev.tsv", 3, choices, "['a', 'b', 'c']"),
            "row 3: column `choices`: 3 options, expected 4",
        ),
        (
            write("yor.val.tsv", 2, choices, "[\"a\", 'b', 'c', 'd'"),
            "row 2: column `choices`: not a Python list",
        ),
        (
            write("yor.test.tsv", 5, answer, "E"),
            "row 5: column `answer`: `E` is not one of A, B, C, D",
        ),
    ];
    for (path, expected) in cases {
        let err = load_file(&path, None).unwrap_err();
        assert!(matches!(err, DataError::InvalidValue { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(expected), "{msg}\nexpected: {expected}");
    }
    let missing = dir.path().join("ibo.x.tsv");
    std::fs::write(&missing, "subject\tquestion\tanswer\nglobal_facts\tq\tA\n").unwrap();
    let err = load_file(&missing, None).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::MissingColumn {
                column: "choices",
                ..
            }
        ),
        "{err}"
    );
    let unknown = dir.path().join("ibo.y.tsv");
    std::fs::write(
        &unknown,
        "subject\tquestion\tchoices\tanswer\nastrology\tq\t['a','b','c','d']\tA\n",
    )
    .unwrap();
    let err = load_file(&unknown, None).unwrap_err().to_string();
    assert!(
        err.contains("row 1: column `subject`: `astrology` is not one of MMLU's 57"),
        "{err}"
    );
}

#[test]
fn the_misordered_english_test_split_is_excluded_by_name_and_rate() {
    let dataset = load_paths(&[common::fixtures().join("afrimmlu")]).unwrap();
    let domains = [Domain::Stem, Domain::Humanities, Domain::SocialSciences];
    let prepared = prepare(
        dataset,
        &config("ig,yo,am,en", &domains, DomainScheme::Study),
    )
    .unwrap();
    let m = &prepared.manifest;
    // Ids count within a subject, so the test split's subjects, ordered differently in
    // English, still meet; two subjects hold other questions, agreeing at chance.
    let found: Vec<&str> = m
        .misaligned_files
        .iter()
        .map(|b| b.subject.as_str())
        .collect();
    assert_eq!(
        found,
        ["high_school_microeconomics", "international_law"],
        "{:#?}",
        m.misaligned_files
    );
    for bad in &m.misaligned_files {
        assert_eq!(bad.language, Language::English);
        assert!(bad.file.ends_with("eng.test.tsv"), "{}", bad.file.display());
        println!(
            "{}: agreement {} chance {}",
            bad.subject, bad.agreement, bad.chance
        );
        assert!(bad.compared > 90, "{} ids compared", bad.compared);
        assert!(
            bad.agreement < 0.45 && (0.2..0.35).contains(&bad.chance),
            "{}: agreement {} chance {}",
            bad.subject,
            bad.agreement,
            bad.chance
        );
    }
    let summary = prepared.summary();
    assert!(
        summary.contains("eng.test.tsv: language en is misaligned in subject international_law: its answer keys agree with the other languages' on "),
        "{summary}"
    );
    // English stays, on the ids it is aligned on; the two subjects' test ids go in every
    // language.
    assert!(m.excluded_languages.is_empty());
    let in_two_subjects = |id: &str| {
        id.starts_with("international_law/test/")
            || id.starts_with("high_school_microeconomics/test/")
    };
    let keyed = m
        .dropped_ambiguous_key
        .iter()
        .filter(|d| in_two_subjects(&d.sample_id))
        .count();
    assert_eq!(
        m.dropped_unaligned + keyed,
        200,
        "the test ids English lacks: {} unaligned + {keyed} with ambiguous keys",
        m.dropped_unaligned
    );
    assert!(
        m.slices
            .iter()
            .all(|s| s.train_ids.iter().chain(&s.test_ids).all(|id| {
                !id.starts_with("international_law/test/")
                    && !id.starts_with("high_school_microeconomics/test/")
            }))
    );
    assert!(m.slices.iter().any(|s| {
        s.test_ids
            .iter()
            .any(|id| id.starts_with("elementary_mathematics/test/"))
    }));
    assert_aligned_and_clean(&prepared);
}

/// Copies AfriMMLU's Igbo and Yoruba files as they are, and Amharic's and English's with
/// their data rows shuffled (a fixed permutation per file, a different one per language),
/// into a new directory.
fn afrimmlu_with_two_shuffled_languages() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for lang in ["ibo", "yor", "amh", "eng"] {
        for split in ["dev", "val", "test"] {
            let name = format!("{lang}.{split}.tsv");
            let text = std::fs::read_to_string(afrimmlu(&name)).unwrap();
            let mut lines: Vec<&str> = text.lines().collect();
            let seed: u64 = match lang {
                "amh" => 0x9e37_79b9_7f4a_7c15,
                "eng" => 0x2545_f491_4f6c_dd1d,
                _ => 0,
            };
            if seed != 0 {
                // Fisher-Yates with xorshift64: deterministic, no dependency.
                let rows = &mut lines[1..];
                let mut x = seed;
                for i in (1..rows.len()).rev() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    rows.swap(i, (x % (i as u64 + 1)) as usize);
                }
            }
            std::fs::write(dir.path().join(&name), lines.join("\n") + "\n").unwrap();
        }
    }
    dir
}

#[test]
fn two_misaligned_languages_are_excluded_whole_and_the_aligned_keep_every_row() {
    // Amharic and English shuffled: each agrees with every other language at chance. They
    // are excluded first, as whole languages, so that they cannot outvote Igbo and Yoruba
    // in the per-block and per-id audits (a polluted majority dropped good rows, or all).
    let dir = afrimmlu_with_two_shuffled_languages();
    let domains = [Domain::Stem, Domain::Humanities, Domain::SocialSciences];
    let dataset = load_paths(&[dir.path()]).unwrap();
    let prepared = prepare(
        dataset.clone(),
        &config("ig,yo,am,en", &domains, DomainScheme::Study),
    )
    .unwrap();
    let m = &prepared.manifest;
    let whole: Vec<Language> = m.misaligned_languages.iter().map(|w| w.language).collect();
    assert_eq!(
        whole,
        [Language::Amharic, Language::English],
        "{:#?}",
        m.misaligned_languages
    );
    for w in &m.misaligned_languages {
        println!("{w}");
        assert!(
            w.agreement <= (w.chance + 1.0) / 2.0 && w.agreement < 0.4,
            "{}: agreement {} chance {}",
            w.language,
            w.agreement,
            w.chance
        );
        assert_eq!(w.dropped_rows, 608, "{w}");
        assert_eq!(w.files.len(), 3, "{w}");
    }
    assert_eq!(m.excluded_languages, [Language::Amharic, Language::English]);
    assert!(m.misaligned_files.is_empty(), "{:#?}", m.misaligned_files);
    let summary = prepared.summary();
    assert!(
        summary.contains("language am (Amharic) is misaligned as a whole: its answer keys agree with every other language's at chance"),
        "{summary}"
    );

    // Igbo and Yoruba keep every row they keep on their own: the same slices, ids and
    // audit results as an experiment of the two alone.
    let alone = prepare(dataset, &config("ig,yo", &domains, DomainScheme::Study)).unwrap();
    let a = &alone.manifest;
    assert_eq!(m.slices, a.slices);
    assert_eq!(m.dropped_ambiguous_key, a.dropped_ambiguous_key);
    assert_eq!(m.dropped_inconsistent, a.dropped_inconsistent);
    assert_eq!((m.dropped_unaligned, a.dropped_unaligned), (0, 0));
    let kept: usize = m
        .slices
        .iter()
        .filter(|s| s.language == Language::Igbo)
        .map(|s| s.train_ids.len() + s.test_ids.len())
        .sum();
    println!(
        "ig keeps {kept} questions; {} ambiguous keys, {} inconsistent ids (ig and yo alone)",
        a.dropped_ambiguous_key.len(),
        a.dropped_inconsistent.len()
    );
    assert_aligned_and_clean(&prepared);
}

#[test]
fn prepare_on_afrimmlu_in_ig_yo_am_en_writes_aligned_leak_free_splits() {
    // Without English's misordered test file: every id in every language.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(common::fixtures().join("afrimmlu")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".tsv") && name != "eng.test.tsv" {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
        }
    }
    let source: DataSource = format!("afrimmlu:{}", dir.path().display())
        .parse()
        .unwrap();
    let (dataset, records) = load_sources(&[source], &LoadOptions::from_env(vec![])).unwrap();
    // A local source of a named benchmark is recorded as given, with its files.
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[0].source,
        format!("afrimmlu:{}", dir.path().display())
    );
    assert_eq!(records[0].benchmark(), Benchmark::AfriMmlu);
    assert_eq!(
        (records[0].commit.as_str(), records[0].files.len()),
        ("", 11)
    );
    assert!(
        records[0].files.contains(&"ibo.test.tsv".to_owned()),
        "{records:?}"
    );
    let domains = [Domain::Stem, Domain::Humanities, Domain::SocialSciences];
    let prepared = prepare(
        dataset.clone(),
        &config("ig,yo,am,en", &domains, DomainScheme::Study),
    )
    .unwrap();
    assert!(prepared.manifest.misaligned_files.is_empty());
    assert_eq!(prepared.manifest.slices.len(), 12);
    assert_aligned_and_clean(&prepared);
    let (_, json) = prepared.files().last().unwrap();
    // The default scheme is left out, so that Global-MMLU manifests keep their bytes.
    assert!(!json.contains("domain_scheme"), "{json}");

    // Igbo, Yoruba and Amharic: all 608 questions, in MMLU's four categories.
    let prepared = prepare(dataset, &config("ig,yo,am", &[], DomainScheme::Mmlu)).unwrap();
    let m = &prepared.manifest;
    let domains: Vec<Domain> = m.slices.iter().map(|s| s.domain).collect();
    assert_eq!(
        domains[..4],
        [
            Domain::Stem,
            Domain::Humanities,
            Domain::SocialSciences,
            Domain::Other
        ]
    );
    let per_language: usize = m
        .slices
        .iter()
        .filter(|s| s.language == Language::Igbo)
        .map(|s| s.train_ids.len() + s.test_ids.len())
        .sum();
    let dropped =
        m.dropped_duplicates + m.dropped_inconsistent.len() + m.dropped_ambiguous_key.len();
    println!("per language {per_language}, dropped {dropped}");
    assert_eq!(per_language + dropped, 608, "{per_language} + {dropped}");
    assert_aligned_and_clean(&prepared);
    let (_, json) = prepared.files().last().unwrap();
    assert!(json.contains("\"domain_scheme\": \"mmlu\""));
    // Medical is no MMLU category.
    let err = prepare(
        load_paths(&[dir.path()]).unwrap(),
        &config("ig,yo", &[Domain::Medical], DomainScheme::Mmlu),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not one of the mmlu scheme's"),
        "{err}"
    );
}

#[test]
fn belebele_reads_both_layouts_into_the_same_ids() {
    let dir = common::fixtures().join("belebele");
    let dataset = load_paths(&[&dir]).unwrap();
    assert_eq!(
        dataset.languages(),
        [
            Language::Amharic,
            Language::German,
            Language::English,
            Language::Igbo
        ]
    );
    assert_eq!(dataset.len(), 4 * 55);
    let en = dataset.by_id(Language::English);
    let de = dataset.by_id(Language::German);
    let am = dataset.by_id(Language::Amharic);
    let id = "https://en.wikibooks.org/wiki/Accordion/Right_hand/1";
    assert!(en.contains_key(id), "{:?}", en.keys().next());
    // The conversion numbers a passage's questions by their place in it, so a passage whose
    // only question is Belebele's number 2 has it as number 1 there: those ids do not meet,
    // and alignment drops them.
    let mut unmatched = Vec::new();
    for (id, q) in &en {
        let Some(d) = de.get(id) else {
            unmatched.push(*id);
            continue;
        };
        assert_eq!(d.answer, q.answer, "{id}");
        assert_eq!(am[id].answer, q.answer, "{id}");
        assert_eq!(q.domain, Domain::Reading);
        // The passage is part of the question.
        assert!(q.question.contains("\n\n"), "{id}");
    }
    assert_eq!(en[id].answer, AnswerLetter::A, "correct_answer_num 1");
    for id in &unmatched {
        let (link, number) = id.rsplit_once('/').unwrap();
        assert_eq!(number, "2", "{id}");
        assert!(!en.contains_key(format!("{link}/1").as_str()), "{id}");
        assert!(de.contains_key(format!("{link}/1").as_str()), "{id}");
    }
    println!("{} of 55 ids not in the converted file", unmatched.len());
    assert!(unmatched.len() < 10, "{unmatched:?}");
    let prepared = prepare(
        dataset,
        &config("ig,am,en,de", &[Domain::Reading], DomainScheme::Study),
    )
    .unwrap();
    assert_aligned_and_clean(&prepared);
    // Belebele asks up to two questions of one passage: the split keeps a passage's
    // questions on one side, so no passage read in training is asked about in test.
    let slice = &prepared.manifest.slices[0];
    let passage = |id: &String| id.rsplit_once('/').unwrap().0.to_owned();
    let train: std::collections::BTreeSet<String> = slice.train_ids.iter().map(passage).collect();
    let shared = slice
        .test_ids
        .iter()
        .filter(|id| train.contains(&passage(id)))
        .count();
    println!(
        "{shared} test questions whose passage is also in training ({} train, {} test)",
        slice.train_ids.len(),
        slice.test_ids.len()
    );
    assert_eq!(shared, 0);
    assert!(!slice.test_ids.is_empty() && !slice.train_ids.is_empty());

    // Bad cells name the file and line.
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(dir.join("ibo_Latn.jsonl")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[3] = lines[3].replace("\"correct_answer_num\":\"", "\"correct_answer_num\":\"9");
    let path = tmp.path().join("ibo_Latn.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let err = load_file(&path, None).unwrap_err().to_string();
    // The cell is quoted as written: a JSON string, `"92"` (the file's "2" with a 9 before).
    assert!(
        err.contains("row 4: column `correct_answer_num`: `\"92\"` is not 1, 2, 3 or 4"),
        "{err}"
    );
    // A number is quoted as written, not as a debug dump (`Some(Number(9))`).
    let original = text.lines().nth(3).unwrap().to_owned();
    let at = original.find("\"correct_answer_num\":").unwrap();
    let value_end = at + original[at..].find(',').unwrap();
    lines[3] = format!(
        "{}\"correct_answer_num\":9{}",
        &original[..at],
        &original[value_end..]
    );
    std::fs::write(&path, lines.join("\n")).unwrap();
    let err = load_file(&path, None).unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::InvalidValue {
                row: 4,
                column: "correct_answer_num",
                ..
            }
        ),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(
        err.ends_with(
            "ibo_Latn.jsonl: row 4: column `correct_answer_num`: `9` is not 1, 2, 3 or 4"
        ),
        "{err}"
    );
    assert!(!err.contains("Some("), "{err}");
    lines[3] = "{not json".to_owned();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let err = load_file(&path, None).unwrap_err().to_string();
    assert!(err.contains("malformed JSON Lines file: line 4"), "{err}");
}

#[test]
fn mmmlu_reads_its_published_schema() {
    let path = common::fixtures().join("mmmlu/mmlu_DE-DE.csv");
    let questions = load_file(&path, None).unwrap();
    assert_eq!(questions.len(), 12);
    assert!(questions.iter().all(|q| q.language == Language::German));
    assert_eq!(questions[0].sample_id, "clinical_knowledge/test/1");
    assert_eq!(questions[0].domain, Domain::Medical);
    assert_eq!(questions[0].answer, AnswerLetter::C);
    let dataset = load_paths(&[common::fixtures().join("mmmlu")]).unwrap();
    assert_eq!(dataset.languages(), [Language::German, Language::French]);
    let prepared = prepare(dataset, &config("de,fr", &[], DomainScheme::Study)).unwrap();
    assert_eq!(prepared.manifest.slices.len(), 6);
    assert_aligned_and_clean(&prepared);

    // MMLU's scheme by default selects its four domains; these rows have no Social
    // Sciences question: the error names the domain and the scheme's domains the data has,
    // rather than an empty slice.
    let dataset = load_paths(&[common::fixtures().join("mmmlu")]).unwrap();
    let err = prepare(dataset, &config("de,fr", &[], DomainScheme::Mmlu)).unwrap_err();
    match &err {
        DataError::DomainNotInData {
            domain, available, ..
        } => {
            assert_eq!(*domain, Domain::SocialSciences);
            assert_eq!(
                available,
                &[Domain::Stem, Domain::Humanities, Domain::Other]
            );
        }
        other => panic!("expected DomainNotInData, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "no question of domain Social Sciences in the data under the mmlu domain scheme; the data has STEM, Humanities, Other (select them with `--domains stem,humanities,other`)"
    );

    // A file named as MMMLU that is not: the header is named.
    let err = load_file_as(&afrimmlu("ibo.dev.tsv"), Some(Benchmark::Mmmlu), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is not MMMLU's `,Question,A,B,C,D,Answer,Subject`"),
        "{err}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("mmlu_FR-FR.csv");
    let text = std::fs::read_to_string(common::fixtures().join("mmmlu/mmlu_FR-FR.csv")).unwrap();
    std::fs::write(
        &bad,
        text.replacen(",C,clinical_knowledge", ",Z,clinical_knowledge", 1),
    )
    .unwrap();
    let err = load_file(&bad, None).unwrap_err().to_string();
    assert!(err.contains("row 1: column `Answer`: `Z`"), "{err}");
}

#[test]
fn formats_are_recognised_from_the_file() {
    let check = |path: &Path, b: Benchmark| {
        assert_eq!(Benchmark::detect(path).unwrap(), b, "{}", path.display())
    };
    let f = common::fixtures();
    check(&f.join("afrimmlu/amh.val.tsv"), Benchmark::AfriMmlu);
    check(&f.join("belebele/amh_Ethi.jsonl"), Benchmark::Belebele);
    check(
        &f.join("belebele/converted/deu_Latn.jsonl"),
        Benchmark::Belebele,
    );
    check(&f.join("mmmlu/mmlu_FR-FR.csv"), Benchmark::Mmmlu);
    check(
        &f.join("global-mmlu/lite/yo.test.csv"),
        Benchmark::GlobalMmlu,
    );
    check(
        &f.join("global-mmlu/full/en.dev.jsonl"),
        Benchmark::GlobalMmlu,
    );
}
