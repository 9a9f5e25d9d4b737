// Compare: the same panels with one series per run of a sweep (coloured by its dimension).

async function render({ model, el }) {
  return renderPanels({ model, el }, null);
}

export default { initialize: initializeModel, render };
