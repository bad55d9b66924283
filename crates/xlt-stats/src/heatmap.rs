//! SVG heatmaps drawn with plotters' SVG backend.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// How values map to colours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColorScale {
    /// Blue below zero, white at zero, red above; `max_abs` saturates.
    Diverging {
        /// The absolute value that gets the fullest colour.
        max_abs: f64,
    },
    /// White at `min` to dark blue at `max`.
    Sequential {
        /// Lightest.
        min: f64,
        /// Darkest.
        max: f64,
    },
}

impl ColorScale {
    /// A diverging scale centred on zero that covers every value.
    pub fn diverging_for(values: &[Vec<Option<f64>>]) -> ColorScale {
        let max_abs = values
            .iter()
            .flatten()
            .flatten()
            .fold(0.0f64, |m, v| m.max(v.abs()))
            .max(1e-9);
        ColorScale::Diverging { max_abs }
    }

    fn color(self, v: f64) -> RGBColor {
        let lerp =
            |a: u8, b: u8, t: f64| (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as u8;
        match self {
            ColorScale::Diverging { max_abs } => {
                let t = (v / max_abs).clamp(-1.0, 1.0);
                // Red (gain) #b2182b, white, blue (loss) #2166ac.
                if t >= 0.0 {
                    RGBColor(lerp(255, 178, t), lerp(255, 24, t), lerp(255, 43, t))
                } else {
                    let t = -t;
                    RGBColor(lerp(255, 33, t), lerp(255, 102, t), lerp(255, 172, t))
                }
            }
            ColorScale::Sequential { min, max } => {
                let t = ((v - min) / (max - min).max(1e-9)).clamp(0.0, 1.0);
                RGBColor(lerp(247, 8, t), lerp(251, 48, t), lerp(255, 107, t))
            }
        }
    }

    fn text_color(self, v: f64) -> RGBColor {
        let t = match self {
            ColorScale::Diverging { max_abs } => (v / max_abs).abs(),
            ColorScale::Sequential { min, max } => (v - min) / (max - min).max(1e-9),
        };
        if t > 0.6 { WHITE } else { BLACK }
    }
}

/// A heatmap to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    /// Title over the map.
    pub title: String,
    /// Label of the row axis.
    pub row_axis: String,
    /// Label of the column axis.
    pub col_axis: String,
    /// Row labels, top to bottom.
    pub rows: Vec<String>,
    /// Column labels, left to right.
    pub cols: Vec<String>,
    /// Values, `values[row][col]`; `None` is drawn grey and labelled `n/a`.
    pub values: Vec<Vec<Option<f64>>>,
    /// Colours.
    pub scale: ColorScale,
    /// How to print a value in its cell (`{:+.1}` for gains, `{:.2}` for accuracies).
    pub decimals: usize,
    /// Print a `+` on positive values.
    pub signed: bool,
    /// What each value rests on (questions, or instances), printed under it as `n=..`;
    /// `counts[row][col]`, like `values`.
    pub counts: Option<Vec<Vec<Option<usize>>>>,
    /// The smallest count a value needs to be coloured and printed: a cell whose count is
    /// below it is drawn light grey and says `too few` over its `n=..` (0: every cell).
    pub min_count: usize,
}

impl Heatmap {
    /// The count of cell (`i`, `j`), when counts are given.
    fn count(&self, i: usize, j: usize) -> Option<usize> {
        self.counts
            .as_ref()
            .and_then(|c| c.get(i))
            .and_then(|row| row.get(j))
            .copied()
            .flatten()
    }

    /// Whether cell (`i`, `j`) rests on fewer than [`Heatmap::min_count`].
    pub fn too_few(&self, i: usize, j: usize) -> bool {
        self.count(i, j).is_some_and(|n| n < self.min_count)
    }

    /// `values` with every cell that rests on too few set to `None`: what a colour scale
    /// should cover.
    pub fn shown_values(&self) -> Vec<Vec<Option<f64>>> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, row)| {
                row.iter()
                    .enumerate()
                    .map(|(j, v)| v.filter(|_| !self.too_few(i, j)))
                    .collect()
            })
            .collect()
    }
}

impl Heatmap {
    /// Renders the map as an SVG document.
    pub fn to_svg(&self) -> String {
        let cell_w: u32 = 46;
        let cell_h: u32 = 30;
        let left: u32 = 110;
        let top: u32 = 120;
        let legend_h: u32 = 60;
        // Wide enough for the grid, the title (about 9 px a character at 16 px bold) and the
        // legend.
        let title_w = left + 9 * self.title.chars().count() as u32 + 20;
        let legend_w = left + 11 * 22 + 40;
        let width = (left + cell_w * self.cols.len() as u32 + 30)
            .max(title_w)
            .max(legend_w);
        let height = top + cell_h * self.rows.len() as u32 + legend_h;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            root.fill(&WHITE).expect("draw to string");
            let font = ("sans-serif", 13).into_font();
            let small = ("sans-serif", 11).into_font();
            root.draw(&Text::new(
                self.title.clone(),
                (left as i32, 18),
                ("sans-serif", 16).into_font().style(FontStyle::Bold),
            ))
            .expect("draw");
            root.draw(&Text::new(
                format!("{} (rows) x {} (columns)", self.row_axis, self.col_axis),
                (left as i32, 38),
                small.clone(),
            ))
            .expect("draw");
            for (j, c) in self.cols.iter().enumerate() {
                let x = (left + cell_w * j as u32 + cell_w / 2) as i32;
                let style = font
                    .clone()
                    .transform(FontTransform::Rotate270)
                    .into_text_style(&root)
                    .pos(Pos::new(HPos::Left, VPos::Center));
                root.draw(&Text::new(c.clone(), (x, (top - 6) as i32), style))
                    .expect("draw");
            }
            for (i, r) in self.rows.iter().enumerate() {
                let y = (top + cell_h * i as u32 + cell_h / 2) as i32;
                let style = font
                    .clone()
                    .into_text_style(&root)
                    .pos(Pos::new(HPos::Right, VPos::Center));
                root.draw(&Text::new(r.clone(), ((left - 8) as i32, y), style))
                    .expect("draw");
                for j in 0..self.cols.len() {
                    let x0 = (left + cell_w * j as u32) as i32;
                    let y0 = (top + cell_h * i as u32) as i32;
                    let v = self
                        .values
                        .get(i)
                        .and_then(|row| row.get(j))
                        .copied()
                        .flatten();
                    let (fill, text, tc) = match v {
                        Some(_) if self.too_few(i, j) => (
                            RGBColor(238, 238, 238),
                            "too few".to_owned(),
                            RGBColor(90, 90, 90),
                        ),
                        Some(v) => (
                            self.scale.color(v),
                            if self.signed {
                                format!("{v:+.*}", self.decimals)
                            } else {
                                format!("{v:.*}", self.decimals)
                            },
                            self.scale.text_color(v),
                        ),
                        None => (
                            RGBColor(220, 220, 220),
                            "n/a".to_owned(),
                            RGBColor(90, 90, 90),
                        ),
                    };
                    root.draw(&Rectangle::new(
                        [(x0, y0), (x0 + cell_w as i32, y0 + cell_h as i32)],
                        fill.filled(),
                    ))
                    .expect("draw");
                    root.draw(&Rectangle::new(
                        [(x0, y0), (x0 + cell_w as i32, y0 + cell_h as i32)],
                        RGBColor(255, 255, 255).stroke_width(1),
                    ))
                    .expect("draw");
                    let style = small
                        .clone()
                        .color(&tc)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    let n = self.count(i, j);
                    let text_y = y0 + cell_h as i32 / 2 - if n.is_some() { 6 } else { 0 };
                    root.draw(&Text::new(text, (x0 + cell_w as i32 / 2, text_y), style))
                        .expect("draw");
                    if let Some(n) = n {
                        let style = ("sans-serif", 9)
                            .into_font()
                            .color(&tc)
                            .pos(Pos::new(HPos::Center, VPos::Center));
                        root.draw(&Text::new(
                            format!("n={n}"),
                            (x0 + cell_w as i32 / 2, y0 + cell_h as i32 / 2 + 8),
                            style,
                        ))
                        .expect("draw");
                    }
                }
            }
            // Legend: a bar of 11 steps with its end values; none when no cell is coloured.
            let ly = (top + cell_h * self.rows.len() as u32 + 20) as i32;
            let coloured = self.shown_values().iter().flatten().any(Option::is_some);
            if coloured {
                let (lo, hi) = match self.scale {
                    ColorScale::Diverging { max_abs } => (-max_abs, max_abs),
                    ColorScale::Sequential { min, max } => (min, max),
                };
                for k in 0..11 {
                    let v = lo + (hi - lo) * k as f64 / 10.0;
                    let x0 = left as i32 + k * 22;
                    root.draw(&Rectangle::new(
                        [(x0, ly), (x0 + 22, ly + 14)],
                        self.scale.color(v).filled(),
                    ))
                    .expect("draw");
                }
                let fmt = |v: f64| {
                    if self.signed {
                        format!("{v:+.*}", self.decimals)
                    } else {
                        format!("{v:.*}", self.decimals)
                    }
                };
                let label = |text: String, x: i32, h: HPos| {
                    let style = small
                        .clone()
                        .into_text_style(&root)
                        .pos(Pos::new(h, VPos::Top));
                    root.draw(&Text::new(text, (x, ly + 18), style))
                        .expect("draw");
                };
                label(fmt(lo), left as i32, HPos::Left);
                label(fmt((lo + hi) / 2.0), left as i32 + 121, HPos::Center);
                label(fmt(hi), left as i32 + 242, HPos::Right);
            } else {
                root.draw(&Text::new(
                    format!(
                        "no cell is coloured: each rests on fewer than {}",
                        self.min_count
                    ),
                    (left as i32, ly),
                    small.clone(),
                ))
                .expect("draw");
            }
            root.present().expect("present");
        }
        svg
    }
}
