// MathJax 3 configuration for pymdownx.arithmatex (generic mode). MathJax itself is vendored
// under assets/mathjax/ (no CDN): fonts load from the same folder, relative to the script.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// Typeset again whenever Material swaps the page content (instant navigation).
document$.subscribe(() => {
  if (window.MathJax && MathJax.startup && MathJax.startup.output && MathJax.typesetPromise) {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    MathJax.typesetPromise();
  }
});
