// Browser-safe entry of the model loader (no node: imports). Node code adds ./node.ts.
export { WeightsFormatError, ModelSourceError } from './errors.ts';
export { type ModelSource, type SourceFile, type LoadProgress, type ProgressFn, UrlSource, FolderSource, ShortReadError } from './source.ts';
export { type TensorInfo, readSafetensorsHeader, readTensorF32 } from './safetensors.ts';
export {
  type OpenedModel, type LoadedTensor, type GenerationConfig, type OpenModelOptions, type QuantChoice,
  openModel, loadWeightsF32, checkTensorSet, collectWeights, resolveWeightFormat,
} from './model.ts';
export { type GgmlTypeInfo, GGML_TYPES } from './ggml-quants.ts';
